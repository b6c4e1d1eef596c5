package main

import (
	"os"
	"strings"
	"testing"
)

// The packaging a new user or operator looks for first: a license, a
// container recipe (static, non-root, a data volume, a health check the
// binary itself answers) and a service unit running the real command.
func TestPackagingFiles(t *testing.T) {
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile("../../" + p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if l := read("LICENSE"); !strings.Contains(l, "Apache License") || !strings.Contains(l, "Version 2.0") {
		t.Error("LICENSE is not the Apache License 2.0")
	}
	docker := read("deploy/Dockerfile")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "USER 65532", "VOLUME [\"/data\"]", "HEALTHCHECK", "\"healthcheck\"", "TOKENBROKER_DATA_DIR=/data", "TOKENBROKER_LISTEN=0.0.0.0:8080"} {
		if !strings.Contains(docker, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
	unit := read("deploy/tokenbroker.service")
	for _, want := range []string{"ExecStart=/usr/local/bin/tokenbroker serve --config ", "User=tokenbroker", "StateDirectory=tokenbroker", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes"} {
		if !strings.Contains(unit, want) {
			t.Errorf("deploy/tokenbroker.service lacks %q", want)
		}
	}
	// The commands the files run exist, with the flags they pass.
	if code, _, errOut := runCLI(t, "help", "healthcheck"); code != 0 {
		t.Errorf("help healthcheck: exit %d %s", code, errOut)
	}
	if code, out, _ := runCLI(t, "serve", "--help"); code != 0 || !strings.Contains(out, "--config") || !strings.Contains(out, "--migrate") || !strings.Contains(out, "--demo") {
		t.Errorf("serve --help: exit %d\n%s", code, out)
	}
	if readme := read("README.md"); !strings.Contains(readme, "go install github.com/tokenbroker/tokenbroker/cmd/tokenbroker@") {
		t.Error("README does not say how to go install the binary")
	}
}
