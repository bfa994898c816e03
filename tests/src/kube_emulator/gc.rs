//! Deletion and the controllers that act on it, as a real cluster runs them:
//!
//! - **DELETE** adds the finalizer its propagation policy implies (`orphan`, the default for
//!   `batch/v1` Jobs, or `foregroundDeletion`) whether or not dependents exist, marks the object
//!   (`deletionTimestamp`, generation + 1) and answers with it; an object without finalizers is
//!   removed at once and the answer is a `Status` (the object itself for Pods and
//!   ServiceAccounts, whose registries return it).
//! - **Garbage collector**: finds owners as the real one does (same namespace, or cluster-scoped;
//!   kind, name and uid all matching; a namespaced owner in another namespace is absent),
//!   orphans dependents, deletes them before a foreground owner goes, deletes dependents all of
//!   whose owners are absent, and drops references to absent owners of dependents that keep a
//!   live one.
//! - **TTL-after-finished**: deletes a finished Job (foreground) once `ttlSecondsAfterFinished`
//!   has passed since its `Complete`/`Failed` condition, by the emulator's clock.
//! - **Job deadlines**: a started Job past `activeDeadlineSeconds` gets `FailureTarget` then, in
//!   a later write, `Failed`, both with reason `DeadlineExceeded`.
//!
//! Controllers run after every write and when the test moves the clock, each to a fixed point,
//! unless the test holds them ([`Controller`]); held, their work waits until released or run.

use serde_json::{Value, json};

use super::error::ApiError;
use super::resource::Propagation;
use super::store::{
    Controller, DeleteOptions, ObjKey, Store, TypeId, finalizers, keys_of, metadata_mut,
    set_finalizers,
};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// Bound on controller passes after one write (a cycle would otherwise spin).
const MAX_PASSES: usize = 256;

fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// How a dependent's owner reference resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The owner exists (it may be being deleted).
    Present,
    /// The owner exists and is being deleted in the foreground, waiting for its dependents.
    Waiting,
    /// No such owner (gone, another uid, or in another namespace).
    Absent,
    /// The reference cannot be resolved (unknown kind, or a namespaced owner of a cluster-scoped
    /// dependent): the garbage collector leaves the dependent alone.
    Unresolvable,
}

/// What a DELETE did.
#[derive(Debug)]
pub(crate) struct Deletion {
    /// The object: as deleted, or as marked for deletion.
    pub object: Value,
    /// Whether it is gone (no finalizers held it).
    pub removed: bool,
}

impl Deletion {
    /// What the apiserver answers: the marked object, or for an object gone at once a `Status`
    /// naming it (the object itself for the registries that return it: Pods, ServiceAccounts).
    pub(crate) fn answer(self, rt: &super::resource::ResourceType) -> Value {
        if !self.removed || rt.returns_deleted_object {
            return self.object;
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": text(&self.object, "/metadata/name"),
                "group": rt.group,
                "kind": rt.plural,
                "uid": text(&self.object, "/metadata/uid"),
            },
        })
    }
}

impl Store {
    pub(crate) fn delete(
        &mut self,
        t: TypeId,
        ns: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deletion, ApiError> {
        let rt = self.types[t].clone();
        let current = self.get(t, ns, name)?;
        if let Some(uid) = &options.precondition_uid
            && uid != text(&current, "/metadata/uid")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    rt.qualified_plural(),
                    text(&current, "/metadata/uid")
                ),
            ));
        }
        if let Some(rv) = &options.precondition_rv
            && rv != text(&current, "/metadata/resourceVersion")
        {
            return Err(ApiError::conflict(&rt, name));
        }
        // Without a policy, a propagation finalizer already on the object decides, then the
        // type's default.
        let present = finalizers(&current);
        let propagation = options.propagation.unwrap_or_else(|| {
            if present.iter().any(|f| f == ORPHAN) {
                Propagation::Orphan
            } else if present.iter().any(|f| f == FOREGROUND) {
                Propagation::Foreground
            } else {
                rt.default_propagation
            }
        });
        let mut finals: Vec<String> = finalizers(&current)
            .into_iter()
            .filter(|f| f != ORPHAN && f != FOREGROUND)
            .collect();
        let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some();
        match propagation {
            Propagation::Orphan => finals.push(ORPHAN.into()),
            Propagation::Foreground => finals.push(FOREGROUND.into()),
            Propagation::Background => {}
        }
        if already_deleting && options.propagation.is_none() {
            // A repeated DELETE without a policy changes nothing.
            finals = finalizers(&current);
        }
        let key = (t, ns.to_owned(), name.to_owned());
        if finals.is_empty() {
            if options.dry_run {
                return Ok(Deletion {
                    object: current,
                    removed: true,
                });
            }
            let gone = self.remove(&key, current);
            self.run_controllers();
            return Ok(Deletion {
                object: gone,
                removed: true,
            });
        }
        let mut deleting = current.clone();
        set_finalizers(&mut deleting, &finals);
        if !already_deleting {
            let now = self.now();
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64);
            let meta = metadata_mut(&mut deleting);
            meta.insert("deletionTimestamp".into(), json!(now));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(generation) = generation.filter(|g| *g > 0) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        if options.dry_run || deleting == current {
            return Ok(Deletion {
                object: deleting,
                removed: false,
            });
        }
        let stored = self.store(&key, deleting, Some(current));
        self.run_controllers();
        Ok(Deletion {
            object: stored,
            removed: false,
        })
    }

    /// Runs every controller the test does not hold, to a fixed point. Writes the controllers
    /// make do not start another round; the running round reaches them.
    pub(crate) fn run_controllers(&mut self) {
        if self.controllers_running {
            return;
        }
        let running: Vec<Controller> = [
            Controller::GarbageCollector,
            Controller::TtlAfterFinished,
            Controller::JobDeadline,
            Controller::CrdEstablishing,
        ]
        .into_iter()
        .filter(|c| self.held.get(c).is_none_or(|n| *n == 0))
        .collect();
        self.run(&running);
    }

    /// Runs these controllers to a fixed point, held or not.
    pub(crate) fn run(&mut self, controllers: &[Controller]) {
        let was_running = std::mem::replace(&mut self.controllers_running, true);
        self.run_passes(controllers);
        self.controllers_running = was_running;
    }

    fn run_passes(&mut self, controllers: &[Controller]) {
        for _ in 0..MAX_PASSES {
            let mut progressed = false;
            for controller in controllers {
                progressed |= match controller {
                    Controller::GarbageCollector => self.gc_pass(),
                    Controller::TtlAfterFinished => self.ttl_pass(),
                    Controller::JobDeadline => self.deadline_pass(),
                    Controller::CrdEstablishing => self.establishing_pass(),
                };
            }
            if !progressed {
                return;
            }
        }
    }

    /// How an owner reference of the object at `key` resolves, as the real collector resolves
    /// it: by kind, then by name in the dependent's namespace (or cluster-wide for
    /// cluster-scoped owners), then by uid.
    fn resolve_owner(&self, key: &ObjKey, reference: &Value) -> Owner {
        let Some(owner_type) =
            self.type_of_kind(text(reference, "/apiVersion"), text(reference, "/kind"))
        else {
            return Owner::Unresolvable;
        };
        let dependent_namespaced = self.types[key.0].namespaced;
        let owner_namespaced = self.types[owner_type].namespaced;
        if owner_namespaced && !dependent_namespaced {
            return Owner::Unresolvable;
        }
        let owner_ns = if owner_namespaced {
            key.1.clone()
        } else {
            String::new()
        };
        let owner_key = (owner_type, owner_ns, text(reference, "/name").to_owned());
        match self.objects.get(&owner_key) {
            Some(owner) if text(owner, "/metadata/uid") == text(reference, "/uid") => {
                let waiting = owner.pointer("/metadata/deletionTimestamp").is_some()
                    && finalizers(owner).iter().any(|f| f == FOREGROUND);
                if waiting {
                    Owner::Waiting
                } else {
                    Owner::Present
                }
            }
            _ => Owner::Absent,
        }
    }

    /// Objects whose owner references resolve to the object at `owner_key`.
    fn dependents_of(&self, owner_key: &ObjKey) -> Vec<ObjKey> {
        let Some(owner) = self.objects.get(owner_key) else {
            return Vec::new();
        };
        let uid = text(owner, "/metadata/uid");
        self.objects
            .iter()
            .filter(|(key, object)| {
                owner_refs(object).iter().any(|r| {
                    text(r, "/uid") == uid
                        && matches!(self.resolve_owner(key, r), Owner::Present | Owner::Waiting)
                })
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// One step of the garbage collector; whether it changed anything.
    fn gc_pass(&mut self) -> bool {
        for key in keys_of(&self.objects) {
            let Some(object) = self.objects.get(&key) else {
                continue;
            };
            // Most objects need nothing: decide that on a reference, and copy only an object
            // acted on (copying every object on every write made N writes cost N² copies).
            let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
            let finals = finalizers(object);
            let acted_on = if deleting {
                finals.iter().any(|f| f == ORPHAN || f == FOREGROUND)
            } else {
                self.may_collect(&key, object)
            };
            if !acted_on {
                continue;
            }
            let object = object.clone();
            if deleting && finals.iter().any(|f| f == ORPHAN) {
                self.orphan_dependents(&key, &object);
                return true;
            }
            if deleting
                && finals.iter().any(|f| f == FOREGROUND)
                && self.delete_in_foreground(&key, &object)
            {
                return true;
            }
            if !deleting && self.collect_if_orphaned(&key, &object) {
                return true;
            }
        }
        false
    }

    fn orphan_dependents(&mut self, key: &ObjKey, owner: &Value) {
        let uid = text(owner, "/metadata/uid").to_owned();
        for dependent in self.dependents_of(key) {
            if let Some(current) = self.objects.get(&dependent).cloned() {
                let mut changed = current.clone();
                remove_owner(&mut changed, &uid);
                let _ = self.controller_write(&dependent, changed, false);
            }
        }
        let mut changed = owner.clone();
        let finals: Vec<String> = finalizers(owner)
            .into_iter()
            .filter(|f| f != ORPHAN)
            .collect();
        set_finalizers(&mut changed, &finals);
        let _ = self.controller_write(key, changed, false);
    }

    /// Deletes the dependents of an owner being deleted in the foreground; once none that block
    /// its deletion (`blockOwnerDeletion: true`) is left, removes its finalizer.
    fn delete_in_foreground(&mut self, key: &ObjKey, owner: &Value) -> bool {
        let uid = text(owner, "/metadata/uid").to_owned();
        let dependents = self.dependents_of(key);
        let mut progressed = false;
        for dependent in &dependents {
            let Some(object) = self.objects.get(dependent).cloned() else {
                continue;
            };
            // A dependent with another live owner only loses its reference to this one.
            let other_owner = owner_refs(&object).iter().any(|r| {
                text(r, "/uid") != uid && self.resolve_owner(dependent, r) == Owner::Present
            });
            if other_owner {
                let mut changed = object.clone();
                remove_owner(&mut changed, &uid);
                let _ = self.controller_write(dependent, changed, false);
                progressed = true;
                continue;
            }
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                // Foreground again only for a dependent with dependents of its own; otherwise
                // as the collector deletes any orphan (its own propagation finalizer decides).
                let propagation = if self.dependents_of(dependent).is_empty()
                    && !self.has_pods(dependent, &object)
                {
                    propagation_by_finalizers(&object)
                } else {
                    Propagation::Foreground
                };
                let (t, ns, name) = dependent.clone();
                let _ = self.delete(
                    t,
                    &ns,
                    &name,
                    &DeleteOptions {
                        propagation: Some(propagation),
                        ..DeleteOptions::default()
                    },
                );
                progressed = true;
            }
        }
        let blocking = self.dependents_of(key).iter().any(|d| {
            self.objects.get(d).is_some_and(|object| {
                owner_refs(object).iter().any(|r| {
                    text(r, "/uid") == uid && r.get("blockOwnerDeletion") == Some(&json!(true))
                })
            })
        });
        if !blocking && let Some(current) = self.objects.get(key).cloned() {
            let mut changed = current.clone();
            let finals: Vec<String> = finalizers(&current)
                .into_iter()
                .filter(|f| f != FOREGROUND)
                .collect();
            set_finalizers(&mut changed, &finals);
            let _ = self.controller_write(key, changed, false);
            return true;
        }
        progressed
    }

    /// A dependent with no owner left is deleted (background, or foreground when an owner waits
    /// for it); one that keeps a live owner loses its references to absent ones.
    /// Whether [`Self::collect_if_orphaned`] would change anything for this object: it has owner
    /// references, all resolvable, and some owner is absent.
    fn may_collect(&self, key: &ObjKey, object: &Value) -> bool {
        let refs = owner_refs(object);
        if refs.is_empty() {
            return false;
        }
        let resolved: Vec<Owner> = refs.iter().map(|r| self.resolve_owner(key, r)).collect();
        if resolved.contains(&Owner::Unresolvable) {
            return false;
        }
        let present = resolved.iter().filter(|o| **o == Owner::Present).count();
        let absent = resolved.iter().filter(|o| **o == Owner::Absent).count();
        if present > 0 || resolved.contains(&Owner::Waiting) {
            return present > 0 && absent > 0;
        }
        true
    }

    fn collect_if_orphaned(&mut self, key: &ObjKey, object: &Value) -> bool {
        let refs = owner_refs(object);
        if refs.is_empty() {
            return false;
        }
        let resolved: Vec<Owner> = refs.iter().map(|r| self.resolve_owner(key, r)).collect();
        if resolved.contains(&Owner::Unresolvable) {
            return false;
        }
        let present = resolved.iter().filter(|o| **o == Owner::Present).count();
        let waiting = resolved.contains(&Owner::Waiting);
        let absent: Vec<String> = refs
            .iter()
            .zip(&resolved)
            .filter(|(_, o)| **o == Owner::Absent)
            .map(|(r, _)| text(r, "/uid").to_owned())
            .collect();
        if present > 0 || waiting {
            // A live owner keeps the dependent (references to absent owners are dropped); an
            // owner waiting in the foreground deletes it in its own pass.
            if present == 0 || absent.is_empty() {
                return false;
            }
            let mut changed = object.clone();
            for uid in &absent {
                remove_owner(&mut changed, uid);
            }
            let _ = self.controller_write(key, changed, false);
            return true;
        }
        let (t, ns, name) = key.clone();
        let propagation = propagation_by_finalizers(object);
        self.delete(
            t,
            &ns,
            &name,
            &DeleteOptions {
                propagation: Some(propagation),
                ..DeleteOptions::default()
            },
        )
        .is_ok()
    }

    /// One step of the TTL-after-finished controller.
    fn ttl_pass(&mut self) -> bool {
        let now = self.now_timestamp();
        let jobs: Vec<(ObjKey, String)> = self
            .objects
            .iter()
            .filter(|((t, _, _), _)| self.is_job(*t))
            .filter(|(_, job)| job.pointer("/metadata/deletionTimestamp").is_none())
            .filter_map(|(key, job)| {
                let ttl = job.pointer("/spec/ttlSecondsAfterFinished")?.as_i64()?;
                let finished = finish_time(job)?;
                let expires = finished
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ttl))
                    .ok()?;
                (expires <= now).then(|| (key.clone(), text(job, "/metadata/uid").to_owned()))
            })
            .collect();
        let mut progressed = false;
        for ((t, ns, name), uid) in jobs {
            progressed |= self
                .delete(
                    t,
                    &ns,
                    &name,
                    &DeleteOptions {
                        propagation: Some(Propagation::Foreground),
                        precondition_uid: Some(uid),
                        ..DeleteOptions::default()
                    },
                )
                .is_ok();
        }
        progressed
    }

    /// One step of the Job controller's deadline check.
    fn deadline_pass(&mut self) -> bool {
        let now = self.now_timestamp();
        let due: Vec<(ObjKey, Value)> = self
            .objects
            .iter()
            .filter(|((t, _, _), _)| self.is_job(*t))
            .filter(|(_, job)| {
                let Some(deadline) = job
                    .pointer("/spec/activeDeadlineSeconds")
                    .and_then(Value::as_i64)
                else {
                    return false;
                };
                let Some(start) = job
                    .pointer("/status/startTime")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
                else {
                    return false;
                };
                let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
                let decided = ["FailureTarget", "Failed", "Complete", "SuccessCriteriaMet"]
                    .iter()
                    .any(|c| condition_true(job, c));
                // A Job already failing or succeeding keeps that outcome and its reason; a
                // deadline failure this controller started is finished in a later write.
                let own_failure = job
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            text(c, "/type") == "FailureTarget"
                                && text(c, "/reason") == "DeadlineExceeded"
                        })
                    })
                    && !condition_true(job, "Failed");
                !suspended
                    && (!decided || own_failure)
                    && start
                        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(deadline))
                        .is_ok_and(|end| end <= now)
            })
            .map(|(key, job)| (key.clone(), job.clone()))
            .collect();
        let mut progressed = false;
        for (key, job) in due {
            let status = deadline_status(&job, &self.now());
            progressed |= self.controller_write(&key, status, true).is_ok();
        }
        progressed
    }

    /// One step of the naming and establishing controllers: every CustomResourceDefinition not
    /// yet `Established` gets its names accepted (`acceptedNames`, `NamesAccepted`) and
    /// `Established`, as a real server does within moments when no other CRD claims the names.
    fn establishing_pass(&mut self) -> bool {
        let now = self.now();
        let due: Vec<(ObjKey, Value)> = self
            .objects
            .iter()
            .filter(|((t, _, _), _)| {
                self.types[*t].behaviour == super::builtin::Behaviour::CustomResourceDefinition
            })
            .filter(|(_, crd)| {
                !condition_true(crd, "Established")
                    || crd.pointer("/status/acceptedNames") != crd.pointer("/spec/names")
            })
            .map(|(key, crd)| (key.clone(), crd.clone()))
            .collect();
        let mut progressed = false;
        for (key, mut crd) in due {
            let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let mut status = crd
                .get_mut("status")
                .filter(|s| s.is_object())
                .map_or_else(|| json!({}), Value::take);
            status["acceptedNames"] = names;
            let condition = |type_: &str, reason: &str, message: &str| {
                json!({"type": type_, "status": "True", "reason": reason, "message": message,
                       "lastTransitionTime": now})
            };
            status["conditions"] = json!([
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition(
                    "Established",
                    "InitialNamesAccepted",
                    "the initial names have been accepted"
                ),
            ]);
            crd["status"] = status;
            progressed |= self.controller_write(&key, crd, true).is_ok();
        }
        progressed
    }

    /// Whether a real cluster would have Pods owned by this object, which the emulator does not
    /// create: a Job that started (its controller made Pods, which stay after it finishes).
    fn has_pods(&self, key: &ObjKey, object: &Value) -> bool {
        self.is_job(key.0) && object.pointer("/status/startTime").is_some()
    }

    fn is_job(&self, t: TypeId) -> bool {
        self.types[t].behaviour == super::builtin::Behaviour::Job
    }
}

/// The next status write of a Job past its deadline: `FailureTarget` first, `Failed` after.
fn deadline_status(job: &Value, now: &str) -> Value {
    let mut next = job.clone();
    let condition = |type_: &str| {
        json!({"type": type_, "status": "True", "reason": "DeadlineExceeded",
               "message": "Job was active longer than specified deadline",
               "lastProbeTime": now, "lastTransitionTime": now})
    };
    let status = next
        .as_object_mut()
        .map(|m| m.entry("status").or_insert_with(|| json!({})));
    let Some(Value::Object(status)) = status else {
        return next;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Value::Array(list) = conditions {
        if list.iter().any(|c| text(c, "/type") == "FailureTarget") {
            list.push(condition("Failed"));
            let active = status.get("active").and_then(Value::as_i64).unwrap_or(0);
            let failed = status.get("failed").and_then(Value::as_i64).unwrap_or(0);
            status.insert("failed".into(), json!(failed + active));
            status.insert("active".into(), json!(0));
            status.insert("ready".into(), json!(0));
            status.insert("terminating".into(), json!(0));
        } else {
            list.push(condition("FailureTarget"));
        }
    }
    next
}

/// How the collector deletes an object: as a propagation finalizer already on it says,
/// otherwise in the background.
fn propagation_by_finalizers(object: &Value) -> Propagation {
    let finals = finalizers(object);
    if finals.iter().any(|f| f == ORPHAN) {
        Propagation::Orphan
    } else if finals.iter().any(|f| f == FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    }
}

fn condition_true(job: &Value, type_: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| text(c, "/type") == type_ && text(c, "/status") == "True")
        })
}

/// When a Job finished: the transition time of its `Complete` or `Failed` condition.
fn finish_time(job: &Value) -> Option<k8s_openapi::jiff::Timestamp> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| matches!(text(c, "/type"), "Complete" | "Failed") && text(c, "/status") == "True")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn owner_refs(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn remove_owner(object: &mut Value, uid: &str) {
    let meta = metadata_mut(object);
    if let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty() {
            meta.remove("ownerReferences");
        }
    }
}
