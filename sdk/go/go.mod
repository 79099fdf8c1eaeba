// SPDX-License-Identifier: BSD-2-Clause

module github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go

go 1.22
