//! Conversions between domain types and protocol messages.

use switchboard_core::{Publication, PublisherInfo, StreamPosition};
use switchboard_proto::client;

/// A domain publisher info as a protocol `ClientInfo`.
pub fn client_info(info: &PublisherInfo) -> client::ClientInfo {
    client::ClientInfo {
        user: info.user.clone(),
        client: info.client.clone(),
        conn_info: info.conn_info.clone(),
        chan_info: info.chan_info.clone(),
    }
}

/// A domain publication as a protocol `Publication`.
pub fn publication(p: &Publication) -> client::Publication {
    client::Publication {
        data: p.data.clone(),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..Default::default()
    }
}

/// A protocol stream position as the domain one.
pub fn position(p: &client::StreamPosition) -> StreamPosition {
    StreamPosition {
        offset: p.offset,
        epoch: p.epoch.clone(),
    }
}
