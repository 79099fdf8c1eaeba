// SPDX-License-Identifier: BSD-2-Clause

//! nffi-grpc-server ADDRESS: the gRPC server of proto/demo.proto that the
//! tests and `make run` start (e.g. `nffi-grpc-server 127.0.0.1:50051`).
//! It counts the TCP connections it accepts, so a test can see that many
//! calls share one.  Prints "listening on ADDRESS" once it accepts, and
//! "sleep MS" when a Sleep call starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

mod pb {
    tonic::include_proto!("nffi.demo");
}

use pb::demo_server::{Demo, DemoServer};

struct Service {
    accepted: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Demo for Service {
    async fn echo(&self, req: Request<pb::EchoRequest>) -> Result<Response<pb::EchoReply>, Status> {
        Ok(Response::new(pb::EchoReply {
            payload: req.into_inner().payload,
        }))
    }

    async fn sleep(
        &self,
        req: Request<pb::SleepRequest>,
    ) -> Result<Response<pb::SleepReply>, Status> {
        let ms = req.into_inner().ms;
        // the tests wait for this line before they stop the server mid-call
        println!("sleep {ms}");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Response::new(pb::SleepReply { ms }))
    }

    async fn connections(
        &self,
        _req: Request<pb::ConnectionsRequest>,
    ) -> Result<Response<pb::ConnectionsReply>, Status> {
        Ok(Response::new(pb::ConnectionsReply {
            accepted: self.accepted.load(Ordering::Relaxed),
        }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: nffi-grpc-server ADDRESS (e.g. 127.0.0.1:50051)")?;
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let incoming = TcpListenerStream::new(listener).map(move |conn| {
        if conn.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        conn
    });
    tonic::transport::Server::builder()
        .add_service(DemoServer::new(Service { accepted }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
