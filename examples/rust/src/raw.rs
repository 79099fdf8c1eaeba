// SPDX-License-Identifier: BSD-2-Clause

//! A runtime that polls by itself with the Task API: `echo` answers the
//! request (nil stays nil), `drop` forgets to answer (the Task's Drop
//! answers an error), `method` answers the method name.

use nonblocking_ffi::{Error, Queue, Serve};

pub fn new(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::raw(|queue: Queue| {
        std::thread::Builder::new()
            .name("nffi-raw".into())
            .spawn(move || {
                // None: unloaded and drained
                while let Some(task) = queue.poll() {
                    match task.method() {
                        "echo" => {
                            let req = task.request().map(<[u8]>::to_vec);
                            task.respond(0, req.as_deref());
                        }
                        "drop" => drop(task),
                        "method" => {
                            let name = task.method_bytes().to_vec();
                            task.respond(0, Some(&name));
                        }
                        other => {
                            let msg = format!("unknown method {other}");
                            task.respond(404, Some(msg.as_bytes()));
                        }
                    }
                }
            })?;
        Ok(())
    }))
}
