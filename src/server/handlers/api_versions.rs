//! ApiVersions: the table of [`super::APIS`], nothing else.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::APIS;
use crate::protocol::encode_with_header;

fn versions() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

pub fn handle(_request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(versions())
}

/// The v0 UNSUPPORTED_VERSION answer to an ApiVersions version skein does not know.
pub fn unsupported(correlation_id: i32) -> Bytes {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(versions());
    encode_with_header(correlation_id, 0, &response, 0).expect("ApiVersions v0 always encodes")
}
