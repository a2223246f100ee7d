//! A WebSocket connection once the HTTP server has handed it over (see [`super::handover`]):
//! frames read from the TCP stream through a buffer that exists only while bytes are waiting,
//! and frames written straight to it. An idle socket holds no buffer at all; the HTTP
//! dispatcher's two 8 KiB buffers, which it kept for the life of every socket, are gone.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseReason, Codec, Frame, Message, ProtocolError};
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest frame a client may send; a longer one is refused (1009) before it is buffered.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Bytes asked of the kernel per read. A driver's location frame is ~120 bytes; a larger frame
/// takes more reads, never a larger idle buffer.
const READ_CHUNK_BYTES: usize = 1_024;
/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const FRAME_HEADER_MAX_BYTES: usize = 14;
/// Control frames (ping, pong, close) carry at most this many payload bytes (RFC 6455 5.5);
/// a close frame's reason text two fewer, after its code.
const CONTROL_PAYLOAD_MAX_BYTES: usize = 125;
const CLOSE_REASON_MAX_BYTES: usize = CONTROL_PAYLOAD_MAX_BYTES - 2;

/// An upgraded connection: the stream, and whatever the client sent after its handshake that
/// the HTTP server had already read.
pub struct Connection {
    pub io: TcpStream,
    pub early: BytesMut,
}

impl Connection {
    /// The frame reader and writer of the socket, in halves that can live in different tasks.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        let (read, write) = self.io.into_split();
        (
            FrameReader {
                io: read,
                buf: self.early,
                codec: Codec::new().max_size(MAX_FRAME_BYTES),
                done: false,
            },
            FrameWriter {
                io: write,
                codec: Codec::new(),
                pending: BytesMut::new(),
            },
        )
    }
}

/// The client's frames, as a stream of messages that ends when the client closes the TCP
/// stream, or after the first error.
pub struct FrameReader {
    io: OwnedReadHalf,
    /// Bytes read and not yet decoded; empty, without an allocation, between frames.
    buf: BytesMut,
    codec: Codec,
    done: bool,
}

impl FrameReader {
    fn decode(&mut self) -> Result<Option<Message>, ProtocolError> {
        let Some(frame) = self.codec.decode(&mut self.buf)? else {
            // A frame of up to the largest size allowed is complete by now: a client that
            // sends more without completing one declared a longer frame.
            if self.buf.len() > MAX_FRAME_BYTES + FRAME_HEADER_MAX_BYTES {
                return Err(ProtocolError::Overflow);
            }
            return Ok(None);
        };
        Ok(Some(match frame {
            Frame::Text(bytes) => ByteString::try_from(bytes)
                .map(Message::Text)
                .map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?,
            Frame::Binary(bytes) => Message::Binary(bytes),
            Frame::Continuation(item) => Message::Continuation(item),
            Frame::Ping(bytes) => Message::Ping(bytes),
            Frame::Pong(bytes) => Message::Pong(bytes),
            Frame::Close(reason) => Message::Close(reason),
        }))
    }
}

impl Stream for FrameReader {
    type Item = Result<Message, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if this.buf.is_empty() {
                // Nothing is waiting: hold no buffer while idle.
                this.buf = BytesMut::new();
            }
            // Read onto the stack and keep only what arrived: a poll that finds nothing (the
            // actor polls its streams whenever it wakes) allocates nothing.
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut filled = ReadBuf::new(&mut chunk);
            let read = Pin::new(&mut this.io).poll_read(cx, &mut filled);
            match ready!(read) {
                Ok(()) if filled.filled().is_empty() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(()) => this.buf.extend_from_slice(filled.filled()),
                Err(error) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(error))));
                }
            }
        }
    }
}

/// Writes frames to the client. Dropping it ends the server's side of the TCP stream.
pub struct FrameWriter {
    io: OwnedWriteHalf,
    codec: Codec,
    /// Encoded frames not yet accepted by the kernel; empty, without an allocation, when
    /// everything has been written.
    pending: BytesMut,
}

impl FrameWriter {
    /// Queues a frame; [`Self::flush`] writes it. Frames queued together are written together.
    pub fn queue(&mut self, message: Message) -> Result<(), ProtocolError> {
        self.codec.encode(within_limits(message), &mut self.pending)
    }

    /// Writes every queued frame. Cancel-safe: what the kernel has not taken stays queued, so a
    /// frame is never cut short by giving up on a write (a close frame queued later still
    /// follows whole frames).
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            if self.io.write_buf(&mut self.pending).await? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        self.pending = BytesMut::new();
        Ok(())
    }

    /// Writes what is queued, then a close frame, and ends the server's side of the stream.
    pub async fn close(&mut self, reason: Option<CloseReason>) -> Result<(), ProtocolError> {
        self.queue(Message::Close(reason))?;
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

/// Control frames trimmed to what RFC 6455 allows (browsers drop a connection over a longer
/// one); a reason is cut at a character boundary.
fn within_limits(message: Message) -> Message {
    match message {
        Message::Close(Some(mut reason)) => {
            if let Some(text) = reason.description.as_mut() {
                let mut end = text.len().min(CLOSE_REASON_MAX_BYTES);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            Message::Close(Some(reason))
        }
        Message::Ping(bytes) if bytes.len() > CONTROL_PAYLOAD_MAX_BYTES => {
            Message::Ping(bytes.slice(..CONTROL_PAYLOAD_MAX_BYTES))
        }
        Message::Pong(bytes) if bytes.len() > CONTROL_PAYLOAD_MAX_BYTES => {
            Message::Pong(bytes.slice(..CONTROL_PAYLOAD_MAX_BYTES))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::CloseCode;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio::net::TcpListener;

    /// A connected pair: the server's side as a reader, the client's as a raw stream.
    async fn pair(early: &[u8]) -> (FrameReader, FrameWriter, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (reader, writer) = Connection {
            io: server,
            early: BytesMut::from(early),
        }
        .split();
        (reader, writer, client)
    }

    /// A frame as a client sends it (masked).
    fn client_frame(message: Message) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Codec::new()
            .client_mode()
            .encode(message, &mut buf)
            .unwrap();
        buf.to_vec()
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_arrives_whole_and_an_idle_reader_keeps_no_buffer() {
        let frame = client_frame(Message::Text("{\"type\":\"location\"}".into()));
        let (mut reader, _writer, mut client) = pair(&frame[..3]).await;
        client.write_all(&frame[3..]).await.unwrap();
        let Some(Ok(Message::Text(text))) = reader.next().await else {
            panic!("no text frame");
        };
        assert_eq!(&*text, "{\"type\":\"location\"}");
        assert!(futures_util::poll!(reader.next()).is_pending());
        assert_eq!(reader.buf.capacity(), 0, "an idle socket holds a buffer");
    }

    #[tokio::test]
    async fn a_frame_declared_longer_than_allowed_is_refused_before_it_is_buffered() {
        let (mut reader, _writer, mut client) = pair(&[]).await;
        // A text frame declaring 1 MiB (64-bit length), masked, then the start of its payload.
        let mut header = vec![0x81, 0xFF];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        client.write_all(&header).await.unwrap();
        let sender = tokio::spawn(async move {
            let chunk = [b'x'; 4_096];
            for _ in 0..16 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            client
        });
        assert!(matches!(
            reader.next().await,
            Some(Err(ProtocolError::Overflow))
        ));
        assert!(reader.buf.len() <= MAX_FRAME_BYTES + FRAME_HEADER_MAX_BYTES + READ_CHUNK_BYTES);
        assert!(
            reader.next().await.is_none(),
            "the stream ends after an error"
        );
        drop(sender);
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_client_closes_its_side() {
        let (mut reader, _writer, client) = pair(&[]).await;
        drop(client);
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn queued_frames_reach_the_client_in_order_unmasked() {
        let (_reader, mut writer, mut client) = pair(&[]).await;
        writer.queue(Message::Text("one".into())).unwrap();
        writer.queue(Message::Text("two".into())).unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            writer.pending.capacity(),
            0,
            "a writer with nothing to write holds a buffer"
        );
        writer.close(Some(CloseCode::Away.into())).await.unwrap();
        let mut received = BytesMut::new();
        tokio::io::AsyncReadExt::read_buf(&mut client, &mut received)
            .await
            .unwrap();
        let mut codec = Codec::new().client_mode();
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut received).unwrap() {
            frames.push(frame);
            if received.is_empty() {
                let mut more = BytesMut::new();
                if tokio::io::AsyncReadExt::read_buf(&mut client, &mut more)
                    .await
                    .unwrap()
                    == 0
                {
                    break;
                }
                received = more;
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Text(Bytes::from_static(b"one")),
                Frame::Text(Bytes::from_static(b"two")),
                Frame::Close(Some(CloseCode::Away.into())),
            ]
        );
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character_boundary_within_the_control_frame_limit() {
        let reason = CloseReason {
            code: CloseCode::Policy,
            description: Some("é".repeat(100)),
        };
        let Message::Close(Some(cut)) = within_limits(Message::Close(Some(reason))) else {
            panic!("not a close");
        };
        let text = cut.description.unwrap();
        assert!(text.len() <= CLOSE_REASON_MAX_BYTES);
        assert_eq!(text.len(), 122);
    }

    #[test]
    fn a_long_ping_payload_is_cut_to_125_bytes() {
        let Message::Ping(bytes) = within_limits(Message::Ping(Bytes::from(vec![7; 300]))) else {
            panic!("not a ping");
        };
        assert_eq!(bytes.len(), CONTROL_PAYLOAD_MAX_BYTES);
    }
}
