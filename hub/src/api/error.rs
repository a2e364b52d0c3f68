//! The API's one error type; every variant becomes a Kubernetes `Status`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use spoke_api::meta::{Status, StatusCause, StatusDetails};
use spoke_api::validation::FieldError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("Operation cannot be fulfilled on {kind} \"{name}\": {message}")]
    Conflict {
        kind: String,
        name: String,
        message: String,
    },
    /// The object failed validation; each cause names a field.
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldError>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Forbidden(String),
    /// A path that names no resource.
    #[error("{0}")]
    NotFoundPath(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A watch asked for a revision that was compacted away: relist.
    #[error("{0}")]
    Expired(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        match e {
            gone @ crate::store::Error::Gone { .. } => Error::Expired(gone.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl Error {
    /// Maps a store error on one object to what the client should see.
    pub fn from_store(e: crate::store::Error, kind: &str, name: &str) -> Error {
        use crate::store::Error as S;
        let (kind, name) = (kind.to_string(), name.to_string());
        match e {
            S::NotFound => Error::NotFound { kind, name },
            S::AlreadyExists => Error::AlreadyExists { kind, name },
            S::Conflict => Error::Conflict {
                kind,
                name,
                message: S::Conflict.to_string(),
            },
            other => Error::Internal(other.to_string()),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            Error::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            Error::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            Error::ServiceUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Error::NotFoundPath(_) => (StatusCode::NOT_FOUND, "NotFound"),
            Error::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            Error::Expired(_) => (StatusCode::GONE, "Expired"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Status {
        let (code, reason) = self.parts();
        let mut status = Status::failure(code.as_u16(), reason, self.to_string());
        let details = match self {
            Error::NotFound { kind, name }
            | Error::AlreadyExists { kind, name }
            | Error::Conflict { kind, name, .. } => Some(StatusDetails {
                name: name.clone(),
                kind: kind.clone(),
                causes: vec![],
            }),
            Error::Invalid { kind, name, causes } => Some(StatusDetails {
                name: name.clone(),
                kind: kind.clone(),
                causes: causes
                    .iter()
                    .map(|c| StatusCause {
                        reason: c.reason.to_string(),
                        message: c.message.clone(),
                        field: c.field.clone(),
                    })
                    .collect(),
            }),
            _ => None,
        };
        status.details = details;
        status
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error answering a request");
        }
        let (code, _) = self.parts();
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_watch_revision_is_410_expired() {
        let e = Error::from(crate::store::Error::Gone {
            requested: 2,
            oldest: 9,
        });
        let status = e.status();
        assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        assert!(
            status.message.contains("too old resource version: 2"),
            "{}",
            status.message
        );
    }

    #[test]
    fn invalid_objects_carry_each_field_as_a_cause() {
        let e = Error::Invalid {
            kind: "Pod".into(),
            name: "a".into(),
            causes: vec![FieldError {
                field: "spec.containers[0].image".into(),
                reason: "FieldValueRequired",
                message: "Required value".into(),
            }],
        };
        let status = e.status();
        assert_eq!(status.code, 422);
        let cause = &status.details.unwrap().causes[0];
        assert_eq!(
            (cause.field.as_str(), cause.reason.as_str()),
            ("spec.containers[0].image", "FieldValueRequired")
        );
    }
}
