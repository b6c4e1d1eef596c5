package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Every problem in one pass, in file order, each with its line and path
// and in plain words (the old message was `line 3: cannot unmarshal !!str
// `eight` into int`, one round at a time).
func TestReadReportsEveryProblemWithLineAndPath(t *testing.T) {
	path := writeConfig(t, `listen: nope
scheduler:
  concurrency: eight
  interval: often
proxy:
  timout: 5s
providers:
  - name: githb
    client_id: x
    client_secret_env: UNSET_FOR_THIS_TEST
`)
	_, err := ReadEnv(path, env(nil))
	if err == nil {
		t.Fatal("Read accepted a broken file")
	}
	msg := err.Error()
	wants := []string{
		path + `:1: listen: "nope" is not host:port`,
		path + `:3: scheduler.concurrency: "eight" must be a whole number`,
		path + `:4: scheduler.interval: "often" is not a duration`,
		path + `:6: proxy.timout: unknown setting; did you mean "timeout"?`,
		path + `:8: providers[0].name: "githb" is not a built-in provider, so nothing is inherited; did you mean "github"?`,
	}
	last := -1
	for _, w := range wants {
		i := strings.Index(msg, w)
		if i < 0 {
			t.Errorf("error lacks %q:\n%s", w, msg)
			continue
		}
		if i < last {
			t.Errorf("%q is out of file order:\n%s", w, msg)
		}
		last = i
	}
	for _, bad := range []string{"!!str", "into int", "config.file"} {
		if strings.Contains(msg, bad) {
			t.Errorf("error speaks Go (%q):\n%s", bad, msg)
		}
	}
	if n := strings.Count(msg, "scheduler.concurrency"); n != 1 {
		t.Errorf("scheduler.concurrency reported %d times:\n%s", n, msg)
	}
}

// Containers and 12-factor deployments configure by environment.
func TestEnvironmentOverridesEverySetting(t *testing.T) {
	path := writeConfig(t, "listen: 127.0.0.1:1111\nlog_level: debug\n")
	c, err := ReadEnv(path, env(map[string]string{
		"TOKENBROKER_LISTEN":                "127.0.0.1:2222",
		"TOKENBROKER_DATABASE":              "postgres://db.example/tb",
		"TOKENBROKER_DATA_DIR":              "/var/lib/tokenbroker",
		"TOKENBROKER_ENCRYPTION_KEYS_FILE":  "/etc/tokenbroker/keys",
		"TOKENBROKER_PUBLIC_URL":            "https://tb.example",
		"TOKENBROKER_LOG_LEVEL":             "",
		"TOKENBROKER_LOG_FORMAT":            "json",
		"TOKENBROKER_PROXY_TIMEOUT":         "90s",
		"TOKENBROKER_PROXY_MAX_REPLAY_BODY": "2MiB",
		"TOKENBROKER_REFRESH_TIMEOUT":       "10s",
		"TOKENBROKER_REFRESH_LEASE_TTL":     "20s",
		"TOKENBROKER_SCHEDULER_DISABLED":    "true",
		"TOKENBROKER_SCHEDULER_INTERVAL":    "2s",
		"TOKENBROKER_SCHEDULER_CONCURRENCY": "3",
		"TOKENBROKER_SCHEDULER_BATCH_SIZE":  "7",
		"TOKENBROKER_SHUTDOWN_GRACE":        "2m",
		"TOKENBROKER_SHUTDOWN_DRAIN_DELAY":  "5s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2222" || c.Database != "postgres://db.example/tb" || c.DataDir != "/var/lib/tokenbroker" ||
		c.EncryptionKeysFile != "/etc/tokenbroker/keys" || c.PublicURL != "https://tb.example" ||
		c.LogLevel != "debug" || c.LogFormat != "json" || c.Proxy.Timeout != 90*time.Second || c.Proxy.MaxReplayBody != 2<<20 ||
		c.Refresh.Timeout != 10*time.Second || c.Refresh.LeaseTTL != 20*time.Second || !c.Scheduler.Disabled ||
		c.Scheduler.Interval != 2*time.Second || c.Scheduler.Concurrency != 3 || c.Scheduler.BatchSize != 7 ||
		c.Shutdown.Grace != 2*time.Minute || c.Shutdown.DrainDelay != 5*time.Second {
		t.Errorf("environment not applied: %+v", *c)
	}
	if len(EnvNames()) != 17 {
		t.Errorf("EnvNames = %v", EnvNames())
	}

	_, err = ReadEnv("", env(map[string]string{"TOKENBROKER_SCHEDULER_CONCURRENCY": "many", "TOKENBROKER_LISTEN": "x"}))
	for _, want := range []string{
		`scheduler.concurrency (from TOKENBROKER_SCHEDULER_CONCURRENCY): "many" must be a whole number`,
		`listen (from TOKENBROKER_LISTEN): "x" is not host:port`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestDollarExpansion(t *testing.T) {
	path := writeConfig(t, `listen: ${TB_HOST}:${TB_PORT:-8081}
providers:
  - name: acme
    token_url: https://${ACME_HOST}/token
    client_id: ${ACME_ID}
    display_name: ACME $$5
    client_secret_env: ACME_SECRET_FOR_TEST
`)
	t.Setenv("ACME_SECRET_FOR_TEST", "s")
	lookup := env(map[string]string{"TB_HOST": "127.0.0.1", "ACME_HOST": "login.acme.example", "ACME_ID": "client-1", "ACME_SECRET_FOR_TEST": "s"})
	c, err := ReadEnv(path, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8081" || c.Providers[0].DisplayName != "ACME $5" || c.Providers[0].TokenURL != "https://login.acme.example/token" || c.Providers[0].ClientID != "client-1" {
		t.Errorf("expanded: listen %q provider %+v", c.Listen, c.Providers[0])
	}
	_, err = ReadEnv(path, env(nil))
	if err == nil || !strings.Contains(err.Error(), path+":4: providers[0].token_url: uses ${ACME_HOST}, but the environment variable ACME_HOST is not set") {
		t.Errorf("unset variable: %v", err)
	}
}

// Each one-provider example loads and validates once its variables and
// secret are there, and names exactly what is missing when they are not.
func TestOneProviderExamples(t *testing.T) {
	dir := t.TempDir()
	secretFile := dir + "/github-secret"
	if err := os.WriteFile(secretFile, []byte("s3cret-for-test"), 0o600); err != nil {
		t.Fatal(err)
	}
	exampleDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("GOOGLE_CLIENT_SECRET", "x")
	t.Setenv("ACME_CLIENT_SECRET", "x")
	for file, vars := range map[string]map[string]string{
		"github.yaml": {"GITHUB_CLIENT_ID": "Iv1.test"},
		"google.yaml": {"GOOGLE_CLIENT_ID": "x.apps.googleusercontent.com"},
		"custom.yaml": {"ACME_ISSUER": "https://login.acme.example", "ACME_CLIENT_ID": "c"},
	} {
		path := exampleDir + "/" + file
		c, err := ReadEnv(path, env(vars))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if len(c.Providers) != 1 {
			t.Errorf("%s: %d providers", file, len(c.Providers))
		}
		if _, err := ReadEnv(path, env(nil)); err == nil || !strings.Contains(err.Error(), "is not set") {
			t.Errorf("%s without its variables: %v", file, err)
		}
	}
}
