//! The agent's CNI endpoint: a Unix socket only root may use (mode 0600 in a 0700
//! directory, and the peer's uid checked), one JSON request per connection.

use std::{
    io::{Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::Path,
    sync::Arc,
};

use anyhow::{Context, Result};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use oxsdn_cni::{
    code,
    protocol::{Request, Response, MAX_MESSAGE_BYTES},
    CniError,
};

use crate::agent::Agent;

pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until the listener fails; each connection gets its own thread
/// (the agent serialises what must be serial).
pub fn serve(listener: UnixListener, agent: Arc<Agent>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let agent = agent.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(stream, &agent) {
                        tracing::warn!("CNI connection: {e:#}");
                    }
                });
            }
            Err(e) => tracing::warn!("accepting a CNI connection: {e}"),
        }
    }
}

fn serve_one(mut stream: UnixStream, agent: &Agent) -> Result<()> {
    let response = match getsockopt(&stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => read_request(&mut stream).map_or_else(Response::Error, |req| agent.handle(req)),
        Ok(cred) => Response::Error(CniError::new(code::INTERNAL, format!("permission denied: uid {} is not root", cred.uid()))),
        Err(e) => Response::Error(CniError::new(code::INTERNAL, format!("cannot identify the caller: {e}"))),
    };
    stream.write_all(&serde_json::to_vec(&response)?)?;
    Ok(())
}

fn read_request(stream: &mut UnixStream) -> Result<Request, CniError> {
    let mut buf = Vec::new();
    stream
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("reading the request: {e}")))?;
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(CniError::new(code::DECODE_FAILURE, format!("request larger than {MAX_MESSAGE_BYTES} bytes")));
    }
    serde_json::from_slice(&buf).map_err(|e| CniError::new(code::DECODE_FAILURE, format!("malformed request: {e}")))
}
