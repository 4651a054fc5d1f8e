//! `connwatch.v1.ListConnectorsResponse`, written out (the build maps the generated
//! name to this type) so that a server can send rows it encoded earlier: listing
//! 100,000 connectors then copies bytes instead of building and encoding 100,000
//! messages under the fleet's locks. On the wire it is exactly the message in
//! `query.proto`; a client decodes every row into `connectors`.

use crate::v1::ConnectorSummary;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

/// The rows of a connector listing.
#[derive(Clone, PartialEq, Default, Debug, serde::Serialize)]
pub struct ListConnectorsResponse {
    /// The rows, decoded: what a client reads.
    pub connectors: Vec<ConnectorSummary>,
    /// Rows already encoded as `ConnectorSummary` messages, each framed as field 1
    /// (see [`ListConnectorsResponse::push_encoded`]); sent after `connectors` as they
    /// are, never filled by decoding.
    #[serde(skip)]
    pub encoded: Vec<u8>,
}

impl ListConnectorsResponse {
    /// Appends a row already encoded as a `ConnectorSummary` message.
    pub fn push_encoded(&mut self, row: &[u8]) {
        encoding::encode_key(1, WireType::LengthDelimited, &mut self.encoded);
        encoding::encode_varint(row.len() as u64, &mut self.encoded);
        self.encoded.extend_from_slice(row);
    }
}

impl prost::Message for ListConnectorsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for row in &self.connectors {
            encoding::message::encode(1, row, buf);
        }
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => encoding::message::merge_repeated(wire_type, &mut self.connectors, buf, ctx)
                .map_err(|mut e| {
                    e.push("ListConnectorsResponse", "connectors");
                    e
                }),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(1, &self.connectors) + self.encoded.len()
    }

    fn clear(&mut self) {
        self.connectors.clear();
        self.encoded.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn rows_sent_encoded_decode_as_rows() {
        let row = |id: &str| ConnectorSummary {
            id: id.into(),
            group: "g".into(),
            finding_count: 2,
            ..Default::default()
        };
        let mut sent = ListConnectorsResponse {
            connectors: vec![row("a")],
            encoded: Vec::new(),
        };
        sent.push_encoded(&row("b").encode_to_vec());
        sent.push_encoded(&row("c").encode_to_vec());
        let bytes = sent.encode_to_vec();
        assert_eq!(bytes.len(), sent.encoded_len());
        let got = ListConnectorsResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(got.connectors, [row("a"), row("b"), row("c")]);
        assert!(got.encoded.is_empty());
    }
}
