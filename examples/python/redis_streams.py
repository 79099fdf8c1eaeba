# SPDX-License-Identifier: BSD-2-Clause

"""A job queue on Redis Streams consumer groups, for nginx (redis-py, asyncio).

nginx submits jobs and asks for their results; every nginx worker runs
consumers of one consumer group, on the runtime's event loop:

  submit(payload) -> job id        XADD to the stream
  result(job id)  -> result JSON   waits until some consumer (of any
                                   worker) has done the job, without polling
  stats()         -> JSON          stream length, pending jobs, consumers

Consumers read new jobs (XREADGROUP), do them, store the result with a
time to live, acknowledge the job (XACK) and announce it on a channel that
every worker listens to (PUBLISH), all in one transaction.  A job whose
consumer died before its XACK (a worker killed mid-job) is claimed by
another consumer once it has been pending for claim_idle_ms (XAUTOCLAIM).
That is a long-lived background consumer, a blocking read and a pub/sub
subscription per worker, shared by every request: nothing lua-resty-redis
can keep between requests.

cfg: "/path/to/redis_streams.py,init,{json settings}"; the settings, all
optional:

  url            "redis://127.0.0.1:6379/0"
  stream         "jobs"       the stream; results go to "<stream>:result:<id>"
  group          "workers"    the consumer group, created when missing
  consumers      2            consumers in each nginx worker
  claim_idle_ms  30000        claim jobs pending longer than this
  claim_every_ms 1000         how often to look for such jobs
  result_ttl     3600         seconds a result is kept
  wait_ms        10000        how long result() waits for a job

The job itself is a stand-in for real work: it counts the words of the
payload and hashes it.
"""

import asyncio
import hashlib
import json
import logging
import os
import re
import socket

import redis.asyncio as redis

import nonblocking_ffi
from nonblocking_ffi import Error

log = logging.getLogger("redis_streams")

DEFAULTS = {
    "url": "redis://127.0.0.1:6379/0",
    "stream": "jobs",
    "group": "workers",
    "consumers": 2,
    "claim_idle_ms": 30000,
    "claim_every_ms": 1000,
    "result_ttl": 3600,
    "wait_ms": 10000,
}

JOB_ID = re.compile(r"^\d+-\d+$")


def do_job(payload):
    """The work: what a consumer stores as the result of a job."""
    return {
        "words": len(payload.split()),
        "sha256": hashlib.sha256(payload.encode()).hexdigest(),
    }


class JobQueue:
    def __init__(self, settings):
        self.settings = settings
        self.stream = settings["stream"]
        self.group = settings["group"]
        self.channel = self.stream + ":done"
        prefix = "%s-%d" % (socket.gethostname(), os.getpid())
        self.names = [
            "%s-%d" % (prefix, i) for i in range(settings["consumers"])
        ]
        self.waiters = {}
        self.done_here = 0
        self.redis = None
        self.pubsub = None
        self.jobs = []

    def result_key(self, job_id):
        return "%s:result:%s" % (self.stream, job_id)

    # lifecycle (on the runtime's event loop)

    async def start(self):
        self.redis = redis.from_url(
            self.settings["url"], decode_responses=True
        )
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id="$", mkstream=True
            )
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

        # subscribed before the first result() looks for a result
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(self.channel)
        while True:
            message = await self.pubsub.get_message(timeout=5)
            if message is None:
                raise RuntimeError("no confirmation of SUBSCRIBE")
            if message["type"] == "subscribe":
                break

        loop = asyncio.get_running_loop()
        self.jobs = [loop.create_task(self.listen())]
        for name in self.names:
            self.jobs.append(loop.create_task(self.consume(name)))
        self.jobs.append(loop.create_task(self.claim(self.names[0])))
        log.info(
            "consuming %s as %s in group %s",
            self.stream,
            ", ".join(self.names),
            self.group,
        )

    async def stop(self):
        # runs to its end after rt:__unload(); at worker exit it may be cut
        # short: a consumer left in the group has no jobs, or they get claimed
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        try:
            # consumers without pending jobs leave the group
            for consumer in await self.redis.xinfo_consumers(
                self.stream, self.group
            ):
                if consumer["name"] in self.names and consumer["pending"] == 0:
                    await self.redis.xgroup_delconsumer(
                        self.stream, self.group, consumer["name"]
                    )
        finally:
            await self.pubsub.aclose()
            await self.redis.aclose()
        log.info("stopped consuming %s", self.stream)

    # background jobs

    async def consume(self, name):
        while True:
            try:
                reply = await self.redis.xreadgroup(
                    self.group, name, {self.stream: ">"}, count=10, block=1000
                )
                for _stream, entries in reply:
                    for job_id, fields in entries:
                        await self.process(name, job_id, fields)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s failed, retrying", name)
                await asyncio.sleep(1)

    async def claim(self, name):
        idle = self.settings["claim_idle_ms"]
        while True:
            await asyncio.sleep(self.settings["claim_every_ms"] / 1000)
            try:
                start = "0-0"
                while True:
                    start, entries, *_deleted = await self.redis.xautoclaim(
                        self.stream, self.group, name, idle, start, count=10
                    )
                    for job_id, fields in entries:
                        log.warning("%s claimed job %s", name, job_id)
                        await self.process(name, job_id, fields)
                    if start == "0-0":
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming jobs failed, retrying")

    async def process(self, name, job_id, fields):
        result = do_job(fields.get("payload", ""))
        result.update(id=job_id, consumer=name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                self.result_key(job_id),
                json.dumps(result, sort_keys=True),
                ex=self.settings["result_ttl"],
            )
            pipe.xack(self.stream, self.group, job_id)
            pipe.publish(self.channel, job_id)
            await pipe.execute()
        self.done_here += 1

    async def listen(self):
        while True:
            try:
                message = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                # redis-py subscribes again when it reconnects
                log.exception("listening on %s failed, retrying", self.channel)
                await asyncio.sleep(1)
                continue
            if message is None or message["type"] != "message":
                continue
            for waiter in self.waiters.pop(message["data"], ()):
                if not waiter.done():
                    waiter.set_result(None)

    # the methods nginx calls

    async def __call__(self, task):
        method = getattr(self, "call_" + task.method, None)
        if method is None:
            raise Error(404, "no method %s" % task.method)
        return await method(task.request)

    async def call_submit(self, payload):
        if payload is None:
            raise Error(400, "submit wants a payload")
        return await self.redis.xadd(
            self.stream, {"payload": payload.decode("utf-8", "replace")}
        )

    async def call_result(self, request):
        job_id = (request or b"").decode("ascii", "replace")
        if not JOB_ID.match(job_id):
            raise Error(400, "bad job id %r" % job_id)

        # waiting before looking: the announcement cannot slip in between
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(job_id, []).append(waiter)
        try:
            result = await self.redis.get(self.result_key(job_id))
            if result is not None:
                return result
            if not await self.redis.xrange(self.stream, job_id, job_id):
                raise Error(404, "no job %s" % job_id)
            try:
                await asyncio.wait_for(waiter, self.settings["wait_ms"] / 1000)
            except asyncio.TimeoutError:
                raise Error(408, "job %s is not done yet" % job_id) from None
            return await self.redis.get(self.result_key(job_id))
        finally:
            waiting = self.waiters.get(job_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self.waiters[job_id]

    async def call_stats(self, _request):
        groups = await self.redis.xinfo_groups(self.stream)
        group = next(g for g in groups if g["name"] == self.group)
        return json.dumps(
            {
                "length": await self.redis.xlen(self.stream),
                "pending": group["pending"],
                "consumers": group["consumers"],
                "done_here": self.done_here,
            },
            sort_keys=True,
        )


def init(rest, tq):
    settings = dict(DEFAULTS)
    settings.update(json.loads(rest) if rest else {})
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError("unknown settings: %s" % ", ".join(sorted(unknown)))

    queue = JobQueue(settings)
    nonblocking_ffi.serve(tq, queue, on_start=queue.start, on_stop=queue.stop)
