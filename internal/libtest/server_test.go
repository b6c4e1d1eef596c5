package libtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/client/remote"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// The tokenbroker binary, built once per test run by server().
var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go tool is not on the PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "tblibtest-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "tokenbroker")
		// Built without -race: the server's races are its own tests'
		// business, and an uninstrumented build is faster to make and run.
		cmd := exec.Command(goTool, "build", "-o", binary, "github.com/tokenbroker/tokenbroker/cmd/tokenbroker")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tbServer is one real tokenbroker process on an SQLite file, with one
// provider (acme) served by authz.
type tbServer struct {
	base    string
	key     string // the bootstrap admin key
	bin     string
	cfgPath string
	env     string // the client secret's variable
}

const secretEnv = "LIBTEST_ACME_SECRET"

var (
	listenRE = regexp.MustCompile(`msg="tokenbroker listening" addr=(\S+)`)
	keyRE    = regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`)
)

// startServer starts tokenbroker with provider acme at authz; apiBase,
// when not empty, is acme's API for the proxy.
func startServer(t *testing.T, authz *authztest.Server, apiBase string) *tbServer {
	t.Helper()
	var api string
	if apiBase != "" {
		api = fmt.Sprintf("    api_base_url: %q\n", apiBase)
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %q
database: %q
encryption_keys_file: %q
log_level: info
scheduler:
  disabled: true
providers:
  - name: acme
    token_url: %q
    authorize_url: %q
    client_id: %q
    client_secret_env: %s
    refresh_window: 5m
%s`, dir, "sqlite:"+filepath.Join(dir, "tb.db"), filepath.Join(dir, "keys"), authz.TokenURL(), authz.AuthorizeURL(),
		authz.ClientID, secretEnv, api)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, logs := &syncBuffer{}, &syncBuffer{}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), secretEnv+"="+authz.ClientSecret)
	cmd.Stdout, cmd.Stderr = out, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("tokenbroker stderr:\n%s", logs.String())
		}
	})
	s := &tbServer{bin: bin, cfgPath: cfgPath, env: secretEnv + "=" + authz.ClientSecret}
	deadline := time.After(time.Minute)
	for s.base == "" || s.key == "" {
		if m := listenRE.FindStringSubmatch(logs.String()); m != nil {
			s.base = "http://" + m[1]
		}
		s.key = keyRE.FindString(out.String())
		select {
		case <-done:
			t.Fatalf("tokenbroker exited during start-up: %s\n%s", cmd.ProcessState, logs.String())
		case <-deadline:
			t.Fatalf("tokenbroker did not start within a minute:\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	hc := s.client(t, s.key)
	for i := 0; ; i++ {
		if err := hc.Healthz(t.Context()); err == nil {
			break
		} else if i == 200 {
			t.Fatalf("/healthz: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return s
}

func (s *tbServer) client(t *testing.T, key string) *remote.Client {
	t.Helper()
	c, err := remote.New(remote.Config{BaseURL: s.base, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newKey creates an API key with role scope, with the CLI on the
// server's database, as an operator would.
func (s *tbServer) newKey(t *testing.T, scope string) string {
	t.Helper()
	cmd := exec.Command(s.bin, "apikey", "create", "--config", s.cfgPath, "--name", "libtest "+scope, "--scope", scope)
	cmd.Env = append(os.Environ(), s.env)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("apikey create: %v\n%s", err, stderr.String())
	}
	key := keyRE.FindString(string(out))
	if key == "" {
		t.Fatal("apikey create printed no key")
	}
	return key
}
