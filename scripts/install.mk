# SPDX-License-Identifier: BSD-2-Clause

# make install / make uninstall, included by the Makefile.
#
#   make install [PREFIX=/usr] [DESTDIR=...]     after make (and make python,
#                                                make java for the loaders)
#   make uninstall [PREFIX=/usr] [DESTDIR=...]   removes exactly those files
#
# Where the files go (each directory can be set on its own):
#
#   NGINX_MODULES_DIR  $(PREFIX)/lib/nginx/modules   the module, and beside
#                      it the loaders with their python/ and java/ folders
#                      (the loaders find their package there); Debian's
#                      nginx loads modules from /usr/lib/nginx/modules
#   LUA_LIB_DIR        $(PREFIX)/share/lua/5.1       resty/nonblocking_ffi.lua,
#                      resty/nonblocking_ffi/prometheus.lua, resty_ffi.lua:
#                      beside Debian's lua-resty-core (/usr/share/lua/5.1),
#                      on LuaJIT's default path
#   INCLUDE_DIR        $(PREFIX)/include             nonblocking_ffi.h
#
# OpenResty (in /usr/local/openresty):
#   make install NGINX_MODULES_DIR=/usr/local/openresty/nginx/modules \
#                LUA_LIB_DIR=/usr/local/openresty/lualib \
#                INCLUDE_DIR=/usr/local/openresty/include
# (the module must be built against OpenResty's nginx: README, "Building
# into OpenResty or an nginx source tree")

PREFIX            ?= /usr
NGINX_MODULES_DIR ?= $(PREFIX)/lib/nginx/modules
LUA_LIB_DIR       ?= $(PREFIX)/share/lua/5.1
INCLUDE_DIR       ?= $(PREFIX)/include

I_MOD  = $(DESTDIR)$(NGINX_MODULES_DIR)
I_LUA  = $(DESTDIR)$(LUA_LIB_DIR)
I_INC  = $(DESTDIR)$(INCLUDE_DIR)

LUA_FILES := resty/nonblocking_ffi.lua resty/nonblocking_ffi/prometheus.lua \
             resty_ffi.lua
PY_LOADER := lib_nonblocking_ffi_python3.so
JAVA_LOADER := lib_nonblocking_ffi_java.so
JAVA_JAR  := java/nonblocking-ffi.jar

.PHONY: install uninstall

install: all
	install -d $(I_MOD) $(I_LUA)/resty/nonblocking_ffi $(I_INC)
	install -m 644 $(MODULE) $(I_MOD)/
	for f in $(LUA_FILES); do \
	    install -m 644 lib/$$f $(I_LUA)/$$f || exit 1; \
	done
	install -m 644 include/nonblocking_ffi.h $(I_INC)/
	@if [ -f $(BUILD)/$(PY_LOADER) ]; then \
	    set -e; \
	    install -d $(I_MOD)/python/nonblocking_ffi; \
	    install -m 644 $(BUILD)/$(PY_LOADER) $(I_MOD)/; \
	    for f in $(BUILD)/python/nonblocking_ffi/*; do \
	        [ -f "$$f" ] || continue; \
	        install -m 644 "$$f" $(I_MOD)/python/nonblocking_ffi/; \
	    done; \
	    install -m 644 $(BUILD)/python/_nonblocking_ffi.pyi $(I_MOD)/python/; \
	    echo "install: the Python loader"; \
	else \
	    echo "install: no Python loader (make python first)"; \
	fi
	@if [ -f $(BUILD)/$(JAVA_LOADER) ]; then \
	    set -e; \
	    install -d $(I_MOD)/java; \
	    install -m 644 $(BUILD)/$(JAVA_LOADER) $(I_MOD)/; \
	    install -m 644 $(BUILD)/$(JAVA_JAR) $(I_MOD)/java/; \
	    echo "install: the Java loader"; \
	else \
	    echo "install: no Java loader (make java first)"; \
	fi

# the files install can have written, whether or not they were; folders
# only the ones that are ours and left empty (Python's caches are ours)
uninstall:
	rm -f $(I_MOD)/ngx_http_lua_nonblocking_ffi_module.so \
	      $(addprefix $(I_LUA)/,$(LUA_FILES)) \
	      $(I_INC)/nonblocking_ffi.h \
	      $(I_MOD)/$(PY_LOADER) $(I_MOD)/$(JAVA_LOADER) \
	      $(I_MOD)/$(JAVA_JAR) $(I_MOD)/python/_nonblocking_ffi.pyi
	rm -f $(addprefix $(I_MOD)/python/nonblocking_ffi/,$(notdir \
	      $(wildcard shims/python/nonblocking_ffi/*.py \
	                 shims/python/nonblocking_ffi/*.pyi \
	                 shims/python/nonblocking_ffi/py.typed)))
	rm -rf $(I_MOD)/python/nonblocking_ffi/__pycache__
	-rmdir $(I_MOD)/python/nonblocking_ffi $(I_MOD)/python \
	       $(I_MOD)/java $(I_LUA)/resty/nonblocking_ffi 2>/dev/null
