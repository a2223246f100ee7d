//! How a simulated client opens its WebSocket: the settings every simulated phone, tablet and
//! kitchen screen shares — the fleet simulator's and the load tools' (`benches/`).

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{self, HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A simulated client's socket.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The read buffer of a simulated client's socket, bytes. The engine's frames are a few hundred
/// bytes (a board's first snapshot a few KiB, read in several goes). tungstenite's default is
/// 128 KiB, allocated at connect and zero-filled up to that much before *every* read
/// (tungstenite-rs#547): with 10,000 sockets in one load tool that was 1.25 GiB of buffers and a
/// fifth of the tool's CPU in `memset`, on the cores the engine under test shares.
pub const CLIENT_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Opens a client WebSocket to `url` signed in with bearer `token`, as apps and browsers do:
/// small read buffer, Nagle's algorithm off (browsers set `TCP_NODELAY` on their sockets; with
/// it on, a small frame that follows an unacknowledged one waits for the peer's delayed ACK).
pub async fn connect_client(url: &str, token: &str) -> Result<ClientSocket, Error> {
    let mut request = url.into_client_request()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(http::Error::from)?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER_BYTES);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    /// A text message of `len` bytes that is not one byte repeated, so that a torn or
    /// reordered read shows.
    fn numbered_text(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }

    #[tokio::test]
    async fn a_client_socket_has_nagle_off_and_reads_messages_many_times_its_read_buffer_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sizes = [
            10,
            CLIENT_READ_BUFFER_BYTES - 1,
            CLIENT_READ_BUFFER_BYTES + 1,
            40 * CLIENT_READ_BUFFER_BYTES,
        ];
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            for len in sizes {
                socket
                    .send(Message::text(numbered_text(len)))
                    .await
                    .unwrap();
            }
        });

        let mut socket = connect_client(&format!("ws://127.0.0.1:{port}/"), "a-token")
            .await
            .unwrap();
        match socket.get_ref() {
            MaybeTlsStream::Plain(tcp) => assert!(tcp.nodelay().unwrap(), "Nagle is off"),
            _ => panic!("a ws:// URL opens a plain TCP stream"),
        }
        for len in sizes {
            let message = socket.next().await.unwrap().unwrap();
            assert_eq!(message.into_text().unwrap().as_str(), numbered_text(len));
        }
        server.await.unwrap();
    }
}
