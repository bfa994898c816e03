//! Errors as the apiserver reports them: a `Status` body with a code, a reason, a message and,
//! for invalid objects and apply conflicts, one cause per field. Field errors are worded as
//! apimachinery's `field.Error` words them (`spec.x: Invalid value: "y": detail`), so a test or a
//! log line reads the same as against a real cluster.

use serde_json::{Value, json};

use super::resource::ResourceType;

/// An error the apiserver would answer with a `Status` object.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// `details` of the Status (name, group, kind, causes), when the real server sends them.
    pub details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(rt, name, &[])
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(rt, name, &[])
    }

    pub(crate) fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified_plural()
            ),
        )
        .with_details(rt, name, &[])
    }

    /// 422 `Invalid` with one cause per field error, worded as `Kind.group "name" is invalid: ...`.
    pub(crate) fn invalid(rt: &ResourceType, name: &str, errors: &[FieldError]) -> ApiError {
        let detail = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {detail}", rt.qualified_kind()),
        )
        .with_details(rt, name, &causes)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// A 500 whose message is the error as is (a plain Go error, not a Status the registry
    /// chose: no reason).
    pub(crate) fn internal_plain(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "", message)
    }

    fn with_details(mut self, rt: &ResourceType, name: &str, causes: &[Value]) -> ApiError {
        let mut details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        if !causes.is_empty() {
            details["causes"] = json!(causes);
        }
        self.details = Some(details);
        self
    }

    /// Adds causes to a Status (apply conflicts name one field each).
    pub(crate) fn with_causes(mut self, causes: Vec<Value>) -> ApiError {
        let mut details = self.details.take().unwrap_or_else(|| json!({}));
        details["causes"] = Value::Array(causes);
        self.details = Some(details);
        self
    }

    /// The `Status` body.
    pub(crate) fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// What is wrong with a field, as apimachinery's `field.ErrorType`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldErrorKind {
    /// `Invalid value: <value>: <detail>`.
    Invalid(Value),
    /// A value of the wrong type (`Invalid value: ...: ... must be of type ...`).
    TypeInvalid(Value),
    /// `Required value`.
    Required,
    /// `Unsupported value: <value>: supported values: ...`.
    Unsupported(Value, Vec<String>),
    /// `Forbidden`.
    Forbidden,
    /// `Too long: may not be more than <n> bytes`.
    TooLong(usize),
    /// `Too many: <n>: must have at most <max> items`.
    TooMany(usize, usize),
    /// `Duplicate value: <value>`.
    Duplicate(Value),
    /// `Not found: <value>`.
    NotFound(Value),
}

impl FieldErrorKind {
    fn reason(&self) -> &'static str {
        match self {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid(_) => "FieldValueTypeInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Unsupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong(_) => "FieldValueTooLong",
            FieldErrorKind::TooMany(..) => "FieldValueTooMany",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotFound(_) => "FieldValueNotFound",
        }
    }
}

/// One field's error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

impl FieldError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    pub(crate) fn type_invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TypeInvalid(value),
            detail: detail.into(),
        }
    }

    /// Whether a custom resource's CEL rules are skipped because of this error (the
    /// apiextensions `hasBlockingErr`: wrong type, missing, not supported, too long, too many).
    pub(crate) fn blocks_cel(&self) -> bool {
        matches!(
            self.kind,
            FieldErrorKind::TypeInvalid(_)
                | FieldErrorKind::Required
                | FieldErrorKind::Unsupported(..)
                | FieldErrorKind::TooLong(_)
                | FieldErrorKind::TooMany(..)
        )
    }

    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Unsupported(
                value,
                supported.iter().map(|s| (*s).to_owned()).collect(),
            ),
            detail: String::new(),
        }
    }

    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong(max),
            detail: String::new(),
        }
    }

    pub(crate) fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooMany(actual, max),
            detail: String::new(),
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: Value) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate(value),
            detail: String::new(),
        }
    }

    pub(crate) fn not_found(field: impl Into<String>, value: Value) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotFound(value),
            detail: String::new(),
        }
    }

    /// `field is immutable`, as `ValidateImmutableField` says it.
    pub(crate) fn immutable(field: impl Into<String>, value: Value) -> Self {
        FieldError::invalid(field, value, "field is immutable")
    }

    /// The text after `field: `.
    pub(crate) fn body(&self) -> String {
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.kind {
            FieldErrorKind::Invalid(value) | FieldErrorKind::TypeInvalid(value) => {
                with_detail(format!("Invalid value: {}", show(value)))
            }
            FieldErrorKind::Required => with_detail("Required value".to_owned()),
            FieldErrorKind::Forbidden => with_detail("Forbidden".to_owned()),
            FieldErrorKind::Unsupported(value, supported) => {
                let list = supported
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "Unsupported value: {}: supported values: {list}",
                    show(value)
                )
            }
            FieldErrorKind::TooLong(max) => {
                with_detail(format!("Too long: may not be more than {max} bytes"))
            }
            FieldErrorKind::TooMany(actual, max) => {
                with_detail(format!("Too many: {actual}: must have at most {max} items"))
            }
            FieldErrorKind::Duplicate(value) => {
                with_detail(format!("Duplicate value: {}", show(value)))
            }
            FieldErrorKind::NotFound(value) => with_detail(format!("Not found: {}", show(value))),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as Go's `%#v`-ish rendering in field errors: strings quoted, others as JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Joins a field path: `spec` + `x` = `spec.x`; the root is the empty path.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `spec.items` + 3 = `spec.items[3]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `metadata.labels` + `app` = `metadata.labels[app]`, as map keys appear in field paths.
pub(crate) fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}
