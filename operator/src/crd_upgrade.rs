//! `--apply-crds`: at start, before the controllers and whether or not this replica leads, the
//! CustomResourceDefinitions this binary was built with (those `crdgen` prints) are applied by
//! server-side apply and waited for until `Established`, so a Helm upgrade that changes the API
//! needs no separate CRD step (Helm never upgrades what `crds/` holds).
//!
//! Rolling upgrades run old and new replicas side by side, and an old replica that starts later
//! must not take the API back: each applied CRD carries the crate version that applied it
//! ([`VERSION_ANNOTATION`]), a CRD whose annotation names a newer version is left alone, and the
//! write is conditional on the resourceVersion the decision was made from (a newer replica's
//! write in between is a conflict, and the decision is made again). [`decide`] is the pure rule.

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::jobs::FIELD_MANAGER;

/// The annotation recording which version of Gatehouse applied a CRD.
pub const VERSION_ANNOTATION: &str = "gatehouse.dev/crd-version";

/// The version this binary applies: the crate's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often a CRD is read again while waiting for it to be established.
const POLL: Duration = Duration::from_millis(250);

/// Conflicting writes (another replica applying at the same moment) tried again at most this
/// often per CRD.
const ATTEMPTS: u32 = 5;

/// Applying the CRDs failed; the operator does not start.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// RBAC (or an admission webhook) refused a call. The API server authorises a server-side
    /// apply as `patch`, and one that creates its object also as `create`: a `patch` refused
    /// on a cluster without the CRD may be the missing `create`.
    #[error(
        "failed to {verb} customresourcedefinitions {name}: forbidden ({message}); --apply-crds \
         needs get, patch and create on apiextensions.k8s.io customresourcedefinitions \
         (resourceNames scanpolicies.gatehouse.dev, scanrequests.gatehouse.dev) for the \
         operator's ServiceAccount (a server-side apply that creates a CRD is authorised as \
         create too)"
    )]
    Forbidden {
        /// `get` or `patch`.
        verb: &'static str,
        /// The CRD.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// Any other API error.
    #[error("failed to {verb} customresourcedefinitions {name}: {source}")]
    Api {
        /// `get` or `patch`.
        verb: &'static str,
        /// The CRD.
        name: String,
        /// Why.
        source: Box<kube::Error>,
    },
    /// Other replicas kept changing the CRD between our read and our write.
    #[error(
        "failed to apply customresourcedefinitions {name}: it changed under every one of {ATTEMPTS} attempts"
    )]
    Contended {
        /// The CRD.
        name: String,
    },
    /// The CRD did not become `Established` in time.
    #[error(
        "customresourcedefinitions {name} was not Established within {seconds} s ({state}); \
         the API server did not accept it"
    )]
    NotEstablished {
        /// The CRD.
        name: String,
        /// The bound.
        seconds: u64,
        /// Its last conditions.
        state: String,
    },
}

/// What to do with one CRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Apply ours (absent, older, unmarked, or the same version: applying again repairs it).
    Apply,
    /// The cluster's was applied by a newer version: leave it.
    KeepNewer(String),
}

/// The rule: apply unless the cluster's CRD carries a version newer than `ours`. A version that
/// does not parse is not newer (the annotation is ours to write; a hand-edited value must not pin
/// the API forever).
pub fn decide(cluster: Option<&CustomResourceDefinition>, ours: &str) -> Decision {
    let theirs = cluster
        .and_then(|c| c.metadata.annotations.as_ref())
        .and_then(|a| a.get(VERSION_ANNOTATION));
    match theirs {
        Some(theirs) if compare_versions(theirs, ours) == Some(Ordering::Greater) => {
            Decision::KeepNewer(theirs.clone())
        }
        _ => Decision::Apply,
    }
}

/// Semantic-version order of `a` and `b` (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`; a pre-release is
/// older than its release; build metadata is ignored); `None` when either does not parse.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let (a_core, a_pre) = parse_version(a)?;
    let (b_core, b_pre) = parse_version(b)?;
    Some(a_core.cmp(&b_core).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => compare_pre_release(a, b),
    }))
}

fn parse_version(text: &str) -> Option<([u64; 3], Option<&str>)> {
    let text = text.trim();
    let text = text.split_once('+').map_or(text, |(v, _)| v);
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) if !pre.is_empty() => (core, Some(pre)),
        Some(_) => return None,
        None => (text, None),
    };
    let mut parts = core.split('.').map(|p| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    });
    let version = [parts.next()??, parts.next()??, parts.next()??];
    if parts.next().is_some() {
        return None;
    }
    Some((version, pre))
}

fn compare_pre_release(a: &str, b: &str) -> Ordering {
    let mut a_ids = a.split('.');
    let mut b_ids = b.split('.');
    loop {
        match (a_ids.next(), b_ids.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// The CRDs this binary applies: `gatehouse_crds::crds()` marked with `version`.
pub fn desired(version: &str) -> Vec<CustomResourceDefinition> {
    let mut crds = gatehouse_crds::crds();
    for crd in &mut crds {
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(VERSION_ANNOTATION.to_owned(), version.to_owned());
    }
    crds
}

fn api_error(verb: &'static str, name: &str, error: kube::Error) -> CrdError {
    match &error {
        kube::Error::Api(status) if status.code == 403 => CrdError::Forbidden {
            verb,
            name: name.to_owned(),
            message: status.message.clone(),
        },
        _ => CrdError::Api {
            verb,
            name: name.to_owned(),
            source: Box::new(error),
        },
    }
}

/// Applies every CRD of this binary (unless the cluster holds a newer one), then waits up to
/// `timeout` for each to be `Established`.
pub async fn apply(client: &kube::Client, timeout: Duration) -> Result<(), CrdError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = desired(VERSION);
    for crd in &crds {
        apply_one(&api, crd).await?;
    }
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_established(&api, &name, timeout).await?;
    }
    Ok(())
}

async fn apply_one(
    api: &Api<CustomResourceDefinition>,
    crd: &CustomResourceDefinition,
) -> Result<(), CrdError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    for _ in 0..ATTEMPTS {
        let current = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error("get", &name, e))?;
        if let Decision::KeepNewer(theirs) = decide(current.as_ref(), VERSION) {
            tracing::info!(
                crd = %name,
                cluster = %theirs,
                ours = VERSION,
                "the cluster's CRD was applied by a newer Gatehouse; left as it is"
            );
            return Ok(());
        }
        let mut body = crd.clone();
        // Conditional on what was decided from: another replica's write in between (a newer
        // one's, say) makes this a conflict, and the decision is made again.
        body.metadata.resource_version = current.and_then(|c| c.metadata.resource_version);
        match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(crd = %name, version = VERSION, "CRD applied");
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(crd = %name, "the CRD changed while applying it; deciding again");
            }
            Err(error) => return Err(api_error("patch", &name, error)),
        }
    }
    Err(CrdError::Contended { name })
}

/// The CRD's conditions, for a message.
fn conditions(crd: &CustomResourceDefinition) -> String {
    let listed: Vec<String> = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| match c.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) => format!("{}={}: {message}", c.type_, c.status),
            None => format!("{}={}", c.type_, c.status),
        })
        .collect();
    if listed.is_empty() {
        "no conditions yet".to_owned()
    } else {
        listed.join(", ")
    }
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<(), CrdError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut state = "not read yet".to_owned();
    loop {
        match api.get_opt(name).await {
            Ok(Some(crd)) if established(&crd) => return Ok(()),
            Ok(Some(crd)) => state = conditions(&crd),
            Ok(None) => "not found".clone_into(&mut state),
            Err(error @ kube::Error::Api(_)) => {
                let error = api_error("get", name, error);
                if matches!(error, CrdError::Forbidden { .. }) {
                    return Err(error);
                }
                state = error.to_string();
            }
            Err(error) => state = error.to_string(),
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(CrdError::NotEstablished {
                name: name.to_owned(),
                seconds: timeout.as_secs(),
                state,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn marked(version: Option<&str>) -> CustomResourceDefinition {
        let mut crd = gatehouse_crds::crds().remove(0);
        if let Some(version) = version {
            crd.metadata.annotations = Some(
                [(VERSION_ANNOTATION.to_owned(), version.to_owned())]
                    .into_iter()
                    .collect(),
            );
        }
        crd
    }

    #[test]
    fn a_crd_is_applied_unless_the_cluster_holds_one_of_a_newer_version() {
        assert_eq!(decide(None, "0.2.0"), Decision::Apply);
        assert_eq!(decide(Some(&marked(None)), "0.2.0"), Decision::Apply);
        assert_eq!(
            decide(Some(&marked(Some("0.1.9"))), "0.2.0"),
            Decision::Apply
        );
        assert_eq!(
            decide(Some(&marked(Some("0.2.0"))), "0.2.0"),
            Decision::Apply
        );
        assert_eq!(
            decide(Some(&marked(Some("0.10.0"))), "0.2.0"),
            Decision::KeepNewer("0.10.0".to_owned())
        );
        assert_eq!(
            decide(Some(&marked(Some("0.2.0"))), "0.2.0-rc.1"),
            Decision::KeepNewer("0.2.0".to_owned())
        );
        // Not ours to trust: a value that does not parse pins nothing.
        assert_eq!(
            decide(Some(&marked(Some("latest"))), "0.2.0"),
            Decision::Apply
        );
    }

    #[test]
    fn versions_compare_as_semantic_versions() {
        use Ordering::{Equal, Greater, Less};
        for (a, b, order) in [
            ("0.1.0", "0.1.0", Equal),
            ("0.10.0", "0.9.9", Greater),
            ("1.0.0", "0.99.99", Greater),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0-rc.2", "1.0.0-rc.10", Less),
            ("1.0.0-alpha", "1.0.0-alpha.1", Less),
            ("1.0.0-beta", "1.0.0-alpha.9", Greater),
            ("1.0.0+build.5", "1.0.0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), Some(order), "{a} vs {b}");
        }
        for bad in ["", "1", "1.2", "1.2.3.4", "v1.2.3", "1.2.x", "1.2.3-"] {
            assert_eq!(compare_versions(bad, "1.2.3"), None, "{bad:?}");
        }
    }

    #[test]
    fn the_applied_crds_are_crdgens_marked_with_the_version() {
        let desired = desired("9.9.9");
        let generated = gatehouse_crds::crds();
        assert_eq!(desired.len(), generated.len());
        for (mut ours, theirs) in desired.into_iter().zip(generated) {
            let annotations = ours.metadata.annotations.take().unwrap();
            assert_eq!(annotations[VERSION_ANNOTATION], "9.9.9");
            assert_eq!(ours, theirs);
        }
    }
}
