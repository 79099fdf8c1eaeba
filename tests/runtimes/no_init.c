/* SPDX-License-Identifier: BSD-2-Clause */

/* A shared library that is no runtime: it exports no init function. */

int
no_init_something(void)
{
    return 42;
}
