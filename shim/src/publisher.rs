//! Events to containerd (`/tasks/exit`, `/tasks/oom`, ...), in order, from one thread.
//!
//! Not containerd-shim's `RemotePublisher`: it is a ttrpc `Client`, which runs two threads of
//! its own per connection. One request at a time on a plain blocking socket is all a publisher
//! needs: write a ttrpc request frame, read the response frame.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use ttrpc::proto::{Codec, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use ttrpc::{Code, MessageHeader, Request, Response};

pub type Event = (&'static str, Any);

const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const TIMEOUT: Duration = Duration::from_secs(5);

struct Client {
    sock: UnixStream,
    /// Client-initiated ttrpc streams have odd ids.
    next_stream: u32,
}

impl Client {
    fn connect(address: &str) -> std::io::Result<Client> {
        let sock = UnixStream::connect(address.strip_prefix("unix://").unwrap_or(address))?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.set_write_timeout(Some(TIMEOUT))?;
        Ok(Client { sock, next_stream: 1 })
    }

    fn forward(&mut self, req: &ForwardRequest) -> Result<(), String> {
        let mut r = Request::new();
        r.service = SERVICE.into();
        r.method = "Forward".into();
        r.timeout_nano = TIMEOUT.as_nanos() as i64;
        r.payload = req.write_to_bytes().map_err(|e| e.to_string())?;
        let payload = r.encode().map_err(|e| e.to_string())?;
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let mh = MessageHeader { length: payload.len() as u32, stream_id: stream, type_: MESSAGE_TYPE_REQUEST, flags: 0 };
        let mut frame: Vec<u8> = mh.into();
        frame.extend_from_slice(&payload);
        self.sock.write_all(&frame).map_err(|e| format!("write: {e}"))?;
        loop {
            let mut h = [0u8; MESSAGE_HEADER_LENGTH];
            self.sock.read_exact(&mut h).map_err(|e| format!("read: {e}"))?;
            let mh = MessageHeader::from(&h);
            if mh.length as usize > MESSAGE_LENGTH_MAX {
                return Err(format!("response of {} bytes", mh.length));
            }
            let mut body = vec![0u8; mh.length as usize];
            self.sock.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
            if mh.type_ != MESSAGE_TYPE_RESPONSE || mh.stream_id != stream {
                continue;
            }
            let res = Response::decode(&body).map_err(|e| e.to_string())?;
            let status = res.status.as_ref();
            return match status.map(|s| s.code.enum_value_or(Code::UNKNOWN)) {
                None | Some(Code::OK) => Ok(()),
                Some(c) => Err(format!("{c:?}: {}", status.map(|s| s.message.as_str()).unwrap_or(""))),
            };
        }
    }
}

/// Forward events to containerd in order; reconnect (containerd restarted) and retry a while.
pub fn run(rx: Receiver<Event>, ttrpc_address: String, namespace: String) {
    let mut client: Option<Client> = None;
    for (topic, any) in rx {
        let mut env = Envelope::new();
        env.topic = topic.to_string();
        env.namespace = namespace.clone();
        env.timestamp = Some(protobuf::well_known_types::timestamp::Timestamp::now()).into();
        env.event = Some(any).into();
        let req = ForwardRequest { envelope: Some(env).into(), ..Default::default() };
        for attempt in 0..50 {
            if client.is_none() {
                client = Client::connect(&ttrpc_address).ok();
            }
            if let Some(c) = &mut client {
                match c.forward(&req) {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!("publish {topic} (attempt {attempt}): {e}");
                        client = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
