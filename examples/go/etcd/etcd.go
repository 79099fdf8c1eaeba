// SPDX-License-Identifier: BSD-2-Clause

// Package etcd is the seed's example: an etcd v3 client serving put, get,
// delete and watch calls from Lua.
//
// cfg is "etcd," followed by JSON: either the seed's list of endpoints
//
//	etcd,["127.0.0.1:2379"]
//
// or an object
//
//	etcd,{"endpoints":["127.0.0.1:2379"],"dial_timeout":"5s","timeout":"5s"}
//
// where timeout bounds each put, get and delete (watch waits as long as the
// caller does).  Requests and answers are JSON:
//
//	rt:put('{"key":"k","value":"v"}')  -> {"revision":5}
//	rt:get('{"key":"k"}')              -> {"found":true,"key":"k","value":"v","mod_revision":5,"revision":5}
//	rt:delete('{"key":"k"}')           -> {"deleted":1,"revision":6}
//	rt:watch('{"key":"k","prefix":false,"start_revision":6}', 30)
//	    -> {"events":[{"type":"DELETE","key":"k","value":"","mod_revision":6}],"next_revision":7}
//
// watch is a long poll: it answers with the next events on the key (or
// under the prefix) from start_revision on, or from now when it is 0 or
// absent.  Calling it again with the answer's next_revision misses
// nothing in between.  When the caller gives up (the call's timeout), the
// watch is cancelled.
//
// A stream of watch, rt:__stream("watch", req), relays the events as they
// come, one JSON event per chunk, until Lua gives up (the client went
// away, the stream timed out or was closed): then the watch is cancelled.
//
//	{"type":"PUT","key":"k","value":"v","mod_revision":7}
package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
)

// RCEtcd is the rc of calls that etcd failed; bad requests get RCBadRequest.
const (
	RCEtcd       = 1
	RCBadRequest = 400
)

type config struct {
	Endpoints   []string `json:"endpoints"`
	DialTimeout string   `json:"dial_timeout"`
	Timeout     string   `json:"timeout"`
}

type client struct {
	cli     *clientv3.Client
	timeout time.Duration
}

// New is the Factory of the etcd handler.  It does not wait for etcd: the
// connection is made by the first call.
func New(cfg string) (nffi.Handler, error) {
	c := config{DialTimeout: "5s", Timeout: "5s"}

	raw := bytes.TrimSpace([]byte(cfg))
	var err error
	if len(raw) > 0 && raw[0] == '[' {
		err = json.Unmarshal(raw, &c.Endpoints)
	} else {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		err = dec.Decode(&c)
	}
	if err != nil {
		return nil, fmt.Errorf("bad cfg %q: %w", cfg, err)
	}
	if len(c.Endpoints) == 0 {
		return nil, errors.New("cfg has no endpoints")
	}

	dial, err := time.ParseDuration(c.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("bad dial_timeout: %w", err)
	}
	timeout, err := time.ParseDuration(c.Timeout)
	if err != nil {
		return nil, fmt.Errorf("bad timeout: %w", err)
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: dial,
		Logger:      logger(),
	})
	if err != nil {
		return nil, err
	}

	e := &client{cli: cli, timeout: timeout}
	return e, nil
}

// the etcd client's warnings and errors go to the nginx error log
func logger() *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{
		MessageKey:     "msg",
		NameKey:        "logger",
		LineEnding:     "\n",
		EncodeDuration: zapcore.StringDurationEncoder,
	})
	core := zapcore.NewCore(enc, zapcore.AddSync(nffi.LogWriter(nffi.LevelWarn)),
		zapcore.WarnLevel)
	return zap.New(core).Named("etcd client")
}

// ServeCall dispatches on the method name.
func (e *client) ServeCall(ctx context.Context, method string, req []byte) ([]byte, error) {
	r, err := parse(req)
	if err != nil {
		return nil, err
	}

	switch method {
	case "put":
		return e.put(ctx, r)
	case "get":
		return e.get(ctx, r)
	case "delete":
		return e.delete(ctx, r)
	case "watch":
		return e.watch(ctx, r)
	}
	return nil, nffi.Errorf(nffi.RCUnknownMethod, "unknown method %s", method)
}

// ServeStream relays a watch's events; the streams of other methods are
// their call's answer, in one chunk.
func (e *client) ServeStream(ctx context.Context, method string, req []byte, s *nffi.Stream) error {
	if method != "watch" {
		rsp, err := e.ServeCall(ctx, method, req)
		if err == nil {
			_, err = s.Write(rsp)
		}
		return err
	}

	r, err := parse(req)
	if err != nil {
		return err
	}
	return e.relay(ctx, r, s)
}

func parse(req []byte) (*request, error) {
	var r request
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, nffi.Errorf(RCBadRequest, "bad request: %v", err)
	}
	if r.Key == "" {
		return nil, nffi.Errorf(RCBadRequest, "bad request: no key")
	}
	return &r, nil
}

// Close closes the client; Serve calls it when the runtime is unloaded.
func (e *client) Close() error {
	return e.cli.Close()
}

type request struct {
	Key           string `json:"key"`
	Value         string `json:"value"`
	Prefix        bool   `json:"prefix"`
	StartRevision int64  `json:"start_revision"`
}

type event struct {
	Type        string `json:"type"`
	Key         string `json:"key"`
	Value       string `json:"value"`
	ModRevision int64  `json:"mod_revision"`
}

func failed(err error) error {
	return nffi.Errorf(RCEtcd, "etcd: %v", err)
}

func (e *client) put(ctx context.Context, r *request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()

	rsp, err := e.cli.Put(ctx, r.Key, r.Value)
	if err != nil {
		return nil, failed(err)
	}
	return json.Marshal(map[string]any{"revision": rsp.Header.Revision})
}

func (e *client) get(ctx context.Context, r *request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()

	rsp, err := e.cli.Get(ctx, r.Key)
	if err != nil {
		return nil, failed(err)
	}
	if len(rsp.Kvs) == 0 {
		return json.Marshal(map[string]any{
			"found": false, "key": r.Key, "revision": rsp.Header.Revision,
		})
	}
	kv := rsp.Kvs[0]
	return json.Marshal(map[string]any{
		"found": true, "key": string(kv.Key), "value": string(kv.Value),
		"mod_revision": kv.ModRevision, "revision": rsp.Header.Revision,
	})
}

func (e *client) delete(ctx context.Context, r *request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()

	rsp, err := e.cli.Delete(ctx, r.Key)
	if err != nil {
		return nil, failed(err)
	}
	return json.Marshal(map[string]any{
		"deleted": rsp.Deleted, "revision": rsp.Header.Revision,
	})
}

func (r *request) watchOptions() []clientv3.OpOption {
	var opts []clientv3.OpOption
	if r.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if r.StartRevision > 0 {
		opts = append(opts, clientv3.WithRev(r.StartRevision))
	}
	return opts
}

func eventOf(ev *clientv3.Event) event {
	return event{
		Type:        ev.Type.String(),
		Key:         string(ev.Kv.Key),
		Value:       string(ev.Kv.Value),
		ModRevision: ev.Kv.ModRevision,
	}
}

// watchEnded is the error of a watch whose channel closed: its context
// ended, or etcd closed it.
func watchEnded(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil {
		return failed(err)
	}
	return failed(errors.New("watch closed"))
}

func (e *client) watch(ctx context.Context, r *request) ([]byte, error) {
	// the watch ends with the call: when it is answered, or when the
	// caller gives up (ctx is cancelled then)
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	for rsp := range e.cli.Watch(ctx, r.Key, r.watchOptions()...) {
		if err := rsp.Err(); err != nil {
			return nil, failed(err)
		}
		if len(rsp.Events) == 0 {
			continue
		}

		events := make([]event, len(rsp.Events))
		for i, ev := range rsp.Events {
			events[i] = eventOf(ev)
		}
		return json.Marshal(map[string]any{
			"events":        events,
			"next_revision": events[len(events)-1].ModRevision + 1,
		})
	}
	return nil, watchEnded(ctx)
}

// relay writes each event of the watch as a chunk of s.  Lua giving up
// ends it: a Write then returns nffi.ErrClosed, and ctx, which the watch
// runs under, is cancelled, also while no event comes.
func (e *client) relay(ctx context.Context, r *request, s *nffi.Stream) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	for rsp := range e.cli.Watch(ctx, r.Key, r.watchOptions()...) {
		if err := rsp.Err(); err != nil {
			return failed(err)
		}
		for _, ev := range rsp.Events {
			chunk, err := json.Marshal(eventOf(ev))
			if err != nil {
				return err
			}
			if _, err := s.Write(chunk); err != nil {
				return err
			}
		}
	}
	return watchEnded(ctx)
}
