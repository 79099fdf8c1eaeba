// SPDX-License-Identifier: BSD-2-Clause

module lua-resty-nonblocking-ffi/sdk/go

go 1.22
