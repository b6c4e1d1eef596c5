package libtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxLibraryModules bounds what a program that imports only the library
// resolves: itself, the library modules and x/oauth2 with its few
// dependencies, with room to spare but nowhere near the server's ninety.
const maxLibraryModules = 12

// A scratch module that imports the library (client, client/remote, oauth,
// oauth/lifecycle) resolves a dozen modules at most, and none of the
// server's or the tests' (docs/library.md, "Modules").
func TestLibraryDependencyBound(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is not on the PATH: %v", err)
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := `module example.com/scratch

go 1.26.0

require (
	github.com/tokenbroker/tokenbroker/client v0.0.0-00010101000000-000000000000
	github.com/tokenbroker/tokenbroker/oauth v0.0.0-00010101000000-000000000000
)

replace (
	github.com/tokenbroker/tokenbroker/client => ` + filepath.Join(repo, "client") + `
	github.com/tokenbroker/tokenbroker/oauth => ` + filepath.Join(repo, "oauth") + `
)
`
	main := `package main

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/client/remote"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
)

func main() {
	var s client.Source = (*remote.TokenSource)(nil)
	fmt.Println(s, oauth.ErrReauthRequired, lifecycle.DefaultWindow, client.ToOAuth2(nil))
}
`
	for name, body := range map[string]string{"go.mod": gomod, "main.go": main} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(goTool, args...)
		cmd.Dir = dir
		// Outside this repository's workspace, as a user's module is.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	run("vet", "./...")
	mods := strings.Fields(run("list", "-m", "-f", "{{.Path}}", "all"))
	if len(mods) > maxLibraryModules {
		t.Errorf("a program importing the library resolves %d modules, want at most %d: %v", len(mods), maxLibraryModules, mods)
	}
	for _, m := range mods {
		for _, banned := range []string{"github.com/jackc/", "modernc.org/", "github.com/prometheus/", "github.com/ory/",
			"github.com/chromedp/", "google.golang.org/grpc", "go.opentelemetry.io/", "github.com/spf13/",
			"github.com/modelcontextprotocol/", "gopkg.in/yaml"} {
			if strings.HasPrefix(m, banned) {
				t.Errorf("a program importing the library resolves %s", m)
			}
		}
		if m == "github.com/tokenbroker/tokenbroker" {
			t.Error("a program importing the library resolves the server module")
		}
	}
	t.Logf("%d modules: %v", len(mods), mods)
}
