// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"strings"
	"testing"
)

// FuzzSplitCfg: any cfg splits without a panic into a trimmed name and
// everything after the first comma, and the two give the cfg back.
// make fuzz runs it; its corpus is testdata/fuzz/FuzzSplitCfg.
func FuzzSplitCfg(f *testing.F) {
	for _, seed := range []string{"", "echo", "echo,", " etcd ,{\"a\":1}",
		",", ",,", "x,a,b", "\x00,\xff", " \t\n,rest"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, cfg string) {
		name, rest := SplitCfg(cfg)
		if name != strings.TrimSpace(name) {
			t.Fatalf("SplitCfg(%q): name %q is not trimmed", cfg, name)
		}
		head, tail, found := strings.Cut(cfg, ",")
		if name != strings.TrimSpace(head) {
			t.Fatalf("SplitCfg(%q): name %q, want %q", cfg, name,
				strings.TrimSpace(head))
		}
		if rest != tail || (!found && rest != "") {
			t.Fatalf("SplitCfg(%q): rest %q, want %q", cfg, rest, tail)
		}
		if strings.Contains(name, ",") {
			t.Fatalf("SplitCfg(%q): name %q has a comma", cfg, name)
		}
	})
}
