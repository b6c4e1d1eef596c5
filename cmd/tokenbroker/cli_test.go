package main

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// The conventions of Go infrastructure CLIs: help for each command,
// completion scripts, flags anywhere, usage mistakes exit 2.
func TestCLIConventions(t *testing.T) {
	code, out, _ := runCLI(t, "help", "connections")
	if code != 0 || !strings.Contains(out, "connect-link") || !strings.Contains(out, "TOKENBROKER_API_KEY") {
		t.Errorf("help connections: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "connections", "get", "--help")
	if code != 0 || !strings.Contains(out, "get ID") {
		t.Errorf("connections get --help: exit %d\n%s", code, out)
	}
	for shell, want := range map[string]string{"bash": "__start_tokenbroker", "zsh": "#compdef tokenbroker", "fish": "complete -c tokenbroker"} {
		code, out, _ := runCLI(t, "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, output lacks %q", shell, code, want)
		}
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"connections"}, {"apikey", "frob"}, {"version", "extra"}, {"version", "--output", "yaml"}, {"serve", "--bogus"}} {
		if code, _, errOut := runCLI(t, args...); code != exitUsage || errOut == "" {
			t.Errorf("%q: exit %d (want %d), stderr %q", args, code, exitUsage, errOut)
		}
	}
	code, out, _ = runCLI(t, "version", "--output", "json")
	var v struct{ Version string }
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" {
		t.Errorf("version --output json: exit %d, %q", code, out)
	}
}

// Flags after the arguments: `connections get bob --json` was refused by
// the old flag parser.
func TestCLIFlagsAfterArguments(t *testing.T) {
	e := newCLIEnv(t)
	access, refresh, _ := e.authz.IssueTokens(t, "read")
	t.Setenv(envAccessToken, access)
	t.Setenv(envRefreshToken, refresh)
	e.mustCLI(t, "connections", "import", "--id", "bob", "--provider", "acme")
	for _, args := range [][]string{
		{"connections", "get", "bob", "--json"},
		{"connections", "get", "bob", "--output", "json"},
		{"connections", "get", "bob", "-o", "json"},
		{"--output", "json", "connections", "get", "bob"},
	} {
		out := e.mustCLI(t, args...)
		var c connection
		if err := json.Unmarshal([]byte(out), &c); err != nil || c.ID != "bob" {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
}

func TestVersionFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		override string
		bi       debug.BuildInfo
		want     string
	}{
		{"v9", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v9"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}, "devel+0123456789ab-dirty"},
		{"", debug.BuildInfo{}, "devel"},
	} {
		if got := versionFrom(tc.override, &tc.bi); got != tc.want {
			t.Errorf("versionFrom(%q, %v) = %q, want %q", tc.override, tc.bi.Main.Version, got, tc.want)
		}
	}
}

// --demo is for loopback only: a sandbox that hands out tokens must never
// face a network.
func TestDemoRefusesNonLoopback(t *testing.T) {
	t.Setenv("TOKENBROKER_DATA_DIR", t.TempDir())
	code, out, errOut := runCLI(t, "serve", "--demo", "--listen", "0.0.0.0:0")
	if code != exitUsage || !strings.Contains(errOut, "loopback") || strings.Contains(out, "tbk_") {
		t.Errorf("serve --demo on 0.0.0.0: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
