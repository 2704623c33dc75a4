//! Confluent-style errors and the extractors that produce them.
//!
//! Confluent clients read `{"error_code": N, "message": "..."}` (confluent-kafka
//! raises `SchemaRegistryError` from those two fields), so the registry answers
//! in that shape rather than with the platform's `application/problem+json`.

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

/// The registry's content type, on every response.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A Confluent error: the HTTP status is the first three digits of the code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        let mut status = self.code;
        while status >= 1000 {
            status /= 10;
        }
        u16::try_from(status)
            .ok()
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub(crate) fn subject_not_found(subject: &str) -> Self {
        Self::new(40401, format!("Subject '{subject}' not found."))
    }

    pub(crate) fn version_not_found(subject: &str, version: &str) -> Self {
        Self::new(
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }

    pub(crate) fn schema_not_found(detail: impl Into<String>) -> Self {
        Self::new(40403, detail)
    }

    pub(crate) fn subject_level_not_configured(subject: &str) -> Self {
        Self::new(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub(crate) fn incompatible(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    pub(crate) fn invalid_schema(message: impl Into<String>) -> Self {
        Self::new(42201, message)
    }

    pub(crate) fn invalid_version(version: &str) -> Self {
        Self::new(
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. \
                 Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub(crate) fn invalid_level(message: impl Into<String>) -> Self {
        Self::new(42203, message)
    }

    pub(crate) fn invalid_subject(message: impl Into<String>) -> Self {
        Self::new(42208, message)
    }

    /// 500: logs the error with its cause chain and answers without its details.
    pub(crate) fn internal(error: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "registry request failed");
        Self::new(50001, "Error in the backend data store")
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(&error)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: u32,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error_code: self.code,
            message: &self.message,
        };
        (self.status(), Reply(body)).into_response()
    }
}

/// A JSON response with the registry's content type.
#[derive(Debug)]
pub(crate) struct Reply<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// A JSON body (any `application/json` or `+json` type); rejections become
/// Confluent errors whose code is the status (413 over the body limit, 400
/// malformed, 422 wrong shape, 415 not JSON).
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                u32::from(rejection.status().as_u16()),
                rejection.body_text(),
            )),
        }
    }
}

/// Path parameters, rejected as Confluent errors.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                u32::from(rejection.status().as_u16()),
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters, rejected as Confluent errors.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                u32::from(rejection.status().as_u16()),
                rejection.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_the_first_three_digits_of_the_code() {
        assert_eq!(ApiError::new(40401, "").status(), StatusCode::NOT_FOUND);
        assert_eq!(ApiError::new(409, "").status(), StatusCode::CONFLICT);
        assert_eq!(
            ApiError::new(42201, "").status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::new(50001, "").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
