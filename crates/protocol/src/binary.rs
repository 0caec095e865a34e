//! Phoenix V2 binary reply frames, which Lightning uses to answer
//! `fetch:dataclip` with the raw JSON bytes of the dataclip.
//!
//! Layout: `0x01` (kind = reply), then one byte each for the lengths of
//! join_ref, ref, topic and status, then those four strings (UTF-8), then
//! the payload bytes.

/// Kind byte of a binary reply.
pub const REPLY_KIND: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BinaryError {
    #[error("binary frame too short")]
    Truncated,
    #[error("binary frame of kind {0}, expected a reply (1)")]
    NotAReply(u8),
    #[error("binary frame header is not UTF-8")]
    NotUtf8,
    #[error("{0} is longer than 255 bytes")]
    FieldTooLong(&'static str),
}

/// A binary reply: the header fields and the raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryReply {
    pub join_ref: String,
    pub msg_ref: String,
    pub topic: String,
    /// `ok` or `error`.
    pub status: String,
    pub payload: Vec<u8>,
}

impl BinaryReply {
    pub fn encode(&self) -> Result<Vec<u8>, BinaryError> {
        let fields: [(&'static str, &str); 4] = [
            ("join_ref", &self.join_ref),
            ("ref", &self.msg_ref),
            ("topic", &self.topic),
            ("status", &self.status),
        ];
        let header: usize = fields.iter().map(|(_, f)| f.len()).sum();
        let mut out = Vec::with_capacity(5 + header + self.payload.len());
        out.push(REPLY_KIND);
        for (name, f) in fields {
            let len = u8::try_from(f.len()).map_err(|_| BinaryError::FieldTooLong(name))?;
            out.push(len);
        }
        for (_, f) in fields {
            out.extend_from_slice(f.as_bytes());
        }
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<BinaryReply, BinaryError> {
        let (&kind, rest) = bytes.split_first().ok_or(BinaryError::Truncated)?;
        if kind != REPLY_KIND {
            return Err(BinaryError::NotAReply(kind));
        }
        if rest.len() < 4 {
            return Err(BinaryError::Truncated);
        }
        let lens = [rest[0], rest[1], rest[2], rest[3]].map(usize::from);
        let mut at = 4;
        let mut take = |len: usize| -> Result<String, BinaryError> {
            let end = at + len;
            let s = rest.get(at..end).ok_or(BinaryError::Truncated)?;
            at = end;
            String::from_utf8(s.to_vec()).map_err(|_| BinaryError::NotUtf8)
        };
        let join_ref = take(lens[0])?;
        let msg_ref = take(lens[1])?;
        let topic = take(lens[2])?;
        let status = take(lens[3])?;
        let header_end = 4 + lens.iter().sum::<usize>();
        Ok(BinaryReply {
            join_ref,
            msg_ref,
            topic,
            status,
            payload: rest[header_end..].to_vec(),
        })
    }

    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_a_reply() {
        let r = BinaryReply {
            join_ref: "272".into(),
            msg_ref: "274".into(),
            topic: "run:run-d2".into(),
            status: "ok".into(),
            payload: br#"{"data":{"x":1}}"#.to_vec(),
        };
        let bytes = r.encode().unwrap();
        assert_eq!(&bytes[..5], &[1, 3, 3, 10, 2]);
        assert_eq!(BinaryReply::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn rejects_truncated_and_foreign_frames() {
        assert_eq!(BinaryReply::decode(&[]), Err(BinaryError::Truncated));
        assert_eq!(BinaryReply::decode(&[1, 3]), Err(BinaryError::Truncated));
        assert_eq!(
            BinaryReply::decode(&[1, 3, 0, 0, 0, b'a']),
            Err(BinaryError::Truncated)
        );
        assert_eq!(
            BinaryReply::decode(&[0, 0, 0, 0, 0]),
            Err(BinaryError::NotAReply(0))
        );
    }

    #[test]
    fn refuses_fields_longer_than_a_byte_can_say() {
        let r = BinaryReply {
            join_ref: "1".into(),
            msg_ref: "1".into(),
            topic: "x".repeat(300),
            status: "ok".into(),
            payload: vec![],
        };
        assert_eq!(r.encode(), Err(BinaryError::FieldTooLong("topic")));
    }
}
