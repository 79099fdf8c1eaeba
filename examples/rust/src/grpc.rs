// SPDX-License-Identifier: BSD-2-Clause

//! A gRPC client (tonic) of proto/demo.proto.  cfg: `grpc,<server URL>`,
//! e.g. `grpc,http://127.0.0.1:50051`.  Every call of the runtime shares
//! one tonic Channel: one HTTP/2 connection, many streams at once; it
//! connects on the first call and again after the server went away.
//!
//! | Lua | RPC | answer |
//! |---|---|---|
//! | `rt:echo(bytes)` | `Echo` | the payload |
//! | `rt:sleep("ms")` | `Sleep` | `"slept <ms>"` |
//! | `rt:connections()` | `Connections` | the connections the server accepted |
//!
//! A failed RPC answers rc = its gRPC status code (14 unavailable, 4
//! deadline exceeded, ...) and `"<code>: <message>"`.

use std::time::Duration;

use nonblocking_ffi::tokio::Call;
use nonblocking_ffi::{Error, Serve};
use tonic::transport::{Channel, Endpoint};

pub mod pb {
    tonic::include_proto!("nffi.demo");
}

use pb::demo_client::DemoClient;

fn status(s: tonic::Status) -> Error {
    Error::new(s.code() as i32, format!("{:?}: {}", s.code(), s.message()))
}

pub fn new(cfg: &str) -> Result<Serve, Error> {
    let url = cfg.trim();
    if url.is_empty() {
        return Err(Error::msg("cfg has no server URL: grpc,http://host:port"));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::msg(format!("bad URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    // the channel's connection runs on the library's tokio runtime
    let channel: Channel = {
        let _guard = nonblocking_ffi::tokio::runtime().enter();
        endpoint.connect_lazy()
    };
    Ok(Serve::tokio(move |call: Call| {
        let client = DemoClient::new(channel.clone());
        async move {
            // a caller that gives up cancels its RPC
            tokio::select! {
                answer = rpc(client, &call) => answer,
                _ = call.cancelled() => Err(Error::msg("the caller gave up")),
            }
        }
    }))
}

async fn rpc(mut client: DemoClient<Channel>, call: &Call) -> Result<Vec<u8>, Error> {
    let req = call.request().unwrap_or_default();
    match call.method() {
        "echo" => {
            let payload = req.to_vec();
            let reply = client
                .echo(pb::EchoRequest { payload })
                .await
                .map_err(status)?;
            Ok(reply.into_inner().payload)
        }
        "sleep" => {
            let ms: u64 = String::from_utf8_lossy(req)
                .parse()
                .map_err(|e| Error::new(400, format!("bad ms: {e}")))?;
            let reply = client
                .sleep(pb::SleepRequest { ms })
                .await
                .map_err(status)?;
            Ok(format!("slept {}", reply.into_inner().ms).into_bytes())
        }
        "connections" => {
            let reply = client
                .connections(pb::ConnectionsRequest {})
                .await
                .map_err(status)?;
            Ok(reply.into_inner().accepted.to_string().into_bytes())
        }
        other => Err(Error::new(404, format!("unknown method {other}"))),
    }
}
