package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/provider"
)

const fakeSecret = "fake-client-secret-for-tests"

var exampleEnv = []string{"ACME_CLIENT_SECRET", "GITHUB_CI_CLIENT_SECRET", "ZENDESK_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET"}

// setExampleEnv sets the example's secret variables to a fake value.
func setExampleEnv(t *testing.T) {
	for _, k := range exampleEnv {
		t.Setenv(k, fakeSecret)
	}
}

// unsetEnv removes k for the rest of the test and restores it afterwards.
func unsetEnv(t *testing.T, k string) {
	t.Setenv(k, "") // registers the restore
	os.Unsetenv(k)
}

// loadExample loads example.yaml with the GitHub secret file pointed at a
// temporary file (the example names /run/secrets/…, which a test cannot
// create).
func loadExample(t *testing.T) *Config {
	t.Helper()
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatalf("Load(example.yaml): %v", err)
	}
	secret := filepath.Join(t.TempDir(), "github_client_secret")
	if err := os.WriteFile(secret, []byte(fakeSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range c.Providers {
		if c.Providers[i].ClientSecretFile != "" {
			c.Providers[i].ClientSecretFile = secret
		}
	}
	return c
}

func TestExampleParsesAndValidates(t *testing.T) {
	setExampleEnv(t)
	c := loadExample(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatalf("Catalog: %v", err)
	}
	if got, want := cat.Names(), []string{"acme", "github", "github-ci", "microsoft", "zendesk"}; !slices.Equal(got, want) {
		t.Errorf("active providers = %v, want %v (unlisted built-ins must stay inactive)", got, want)
	}
	if _, ok := cat.Get("google"); ok {
		t.Error("google is active though the example does not list it")
	}

	gh, _ := cat.Get("github")
	builtin := provider.Builtins()["github"]
	if gh.TokenURL != builtin.TokenURL || gh.Rotation != builtin.Rotation || gh.ClientID != "Iv1.0000000000000000" {
		t.Errorf("github did not inherit its built-in profile with the YAML client id: %v", gh)
	}
	if gh.RefreshWindow != 15*time.Minute {
		t.Errorf("github refresh_window = %s, want the YAML override 15m", gh.RefreshWindow)
	}
	if gh.ClientSecret != fakeSecret {
		t.Errorf("github secret from file: got %d bytes, want %d (trailing newline trimmed)", len(gh.ClientSecret), len(fakeSecret))
	}

	ci, _ := cat.Get("github-ci")
	if ci.TokenURL != builtin.TokenURL || ci.ClientSecret != fakeSecret {
		t.Error("github-ci did not inherit profile github or resolve its env secret")
	}

	acme, _ := cat.Get("acme")
	if acme.DefaultExpiresIn != time.Hour || acme.RefreshWindow != 5*time.Minute || !slices.Equal(acme.RefreshOn, []int{401}) ||
		acme.IntrospectionURL != "https://login.acme.example/oauth/introspect" || acme.ClientSecret != fakeSecret {
		t.Errorf("acme fields not carried over: %v", acme.LogValue())
	}

	zd, _ := cat.Get("zendesk")
	if zd.TokenURL != "https://acme.zendesk.com/oauth/tokens" {
		t.Errorf("zendesk token URL = %q, want the subdomain filled in", zd.TokenURL)
	}

	ms, _ := cat.Get("microsoft")
	if want := []string{"offline_access", "User.Read", "Mail.Read"}; !slices.Equal(ms.Scopes, want) {
		t.Errorf("microsoft scopes = %v, want %v (YAML scopes added to the built-in's)", ms.Scopes, want)
	}
}

func TestExampleFieldsAreTheDefaults(t *testing.T) {
	example, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	example.Providers = nil
	example.src, def.src = nil, nil
	if !reflect.DeepEqual(example, def) {
		t.Errorf("example.yaml's top-level values differ from the defaults it claims:\nexample %+v\ndefault %+v", *example, *def)
	}
}

func TestExampleWithoutSecretsNamesThem(t *testing.T) {
	for _, k := range exampleEnv {
		unsetEnv(t, k)
	}
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate passed with no secrets available")
	}
	for _, want := range []string{
		"providers[0].client_secret_env: environment variable ACME_CLIENT_SECRET is not set",
		"providers[1].client_secret_file: cannot read /run/secrets/github_client_secret",
		"providers[3].client_secret_env: environment variable ZENDESK_CLIENT_SECRET is not set",
	} {
		// Each with the file and the line of its entry.
		if !regexp.MustCompile(`config: example\.yaml:\d+: ` + regexp.QuoteMeta(want)).MatchString(err.Error()) {
			t.Errorf("error does not contain example.yaml:LINE: %q:\n%v", want, err)
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("missing secret file error does not match fs.ErrNotExist")
	}
	if _, err := c.Catalog(); err == nil {
		t.Error("Catalog succeeded with no secrets available")
	}
}

func TestDefaults(t *testing.T) {
	check := func(t *testing.T, c *Config) {
		t.Helper()
		want := Config{
			Listen:             "127.0.0.1:8080",
			Database:           "sqlite:./tokenbroker-data" + string(os.PathSeparator) + "tokenbroker.db",
			DataDir:            "./tokenbroker-data",
			EncryptionKeysFile: "./tokenbroker-data" + string(os.PathSeparator) + "keys",
			PublicURL:          "http://127.0.0.1:8080",
			LogLevel:           "info",
			LogFormat:          "text",
			Proxy:              ProxyConfig{MaxReplayBody: 1 << 20, Timeout: 60 * time.Second},
			Refresh:            RefreshConfig{Timeout: 20 * time.Second, LeaseTTL: 30 * time.Second, OnErrorInterval: 30 * time.Second},
			Scheduler:          SchedulerConfig{Interval: time.Second, Concurrency: 8, BatchSize: 100},
			Shutdown:           ShutdownConfig{Grace: 65 * time.Second},
			Audit:              AuditConfig{Retention: DefaultAuditRetention},
			Security: SecurityConfig{MaxConnections: DefaultMaxConnections, BodyTimeout: DefaultBodyTimeout,
				PublicBodyTimeout: DefaultPublicBodyTimeout},
		}
		if c.Providers != nil {
			t.Errorf("providers = %v, want none", c.Providers)
		}
		got := *c
		got.src = nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("defaults:\n got %+v\nwant %+v", *c, want)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("defaults do not validate: %v", err)
		}
		driver, dsn, err := c.DatabaseDSN()
		if err != nil || driver != "sqlite" || dsn != "./tokenbroker-data"+string(os.PathSeparator)+"tokenbroker.db" {
			t.Errorf("DatabaseDSN = %q, %q, %v", driver, dsn, err)
		}
		cat, err := c.Catalog()
		if err != nil || len(cat.Names()) != 0 {
			t.Errorf("zero-config catalog = %v, %v; want empty", cat.Names(), err)
		}
	}
	t.Run("no file", func(t *testing.T) {
		c, err := Load("")
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	t.Run("empty file", func(t *testing.T) {
		c, err := Load(writeConfig(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	t.Run("comments only", func(t *testing.T) {
		c, err := Load(writeConfig(t, "# nothing\n"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
}

func TestDerivedDefaults(t *testing.T) {
	sep := string(os.PathSeparator)
	tests := []struct {
		yaml                           string
		database, keys, publicURL, dir string
	}{
		{"data_dir: /var/lib/tb\n", "sqlite:/var/lib/tb" + sep + "tokenbroker.db", "/var/lib/tb" + sep + "keys", "http://127.0.0.1:8080", "/var/lib/tb"},
		{"data_dir: /var/lib/tb/\n", "sqlite:/var/lib/tb/tokenbroker.db", "/var/lib/tb/keys", "http://127.0.0.1:8080", "/var/lib/tb/"},
		{"listen: ':9090'\n", "", "", "http://localhost:9090", ""},
		{"listen: 0.0.0.0:9090\n", "", "", "http://localhost:9090", ""},
		{"listen: '[::1]:9090'\n", "", "", "http://[::1]:9090", ""},
		{"public_url: https://broker.example.com/\n", "", "", "https://broker.example.com", ""},
	}
	for _, tt := range tests {
		c, err := Load(writeConfig(t, tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if tt.database != "" && (c.Database != tt.database || c.EncryptionKeysFile != tt.keys || c.DataDir != tt.dir) {
			t.Errorf("%q: database %q keys %q dir %q", tt.yaml, c.Database, c.EncryptionKeysFile, c.DataDir)
		}
		if c.PublicURL != tt.publicURL {
			t.Errorf("%q: public_url = %q, want %q", tt.yaml, c.PublicURL, tt.publicURL)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
		}
	}
}

func TestDurationsAndSizes(t *testing.T) {
	t.Setenv("ACME_SECRET", fakeSecret)
	c, err := Load(writeConfig(t, `
proxy:
  max_replay_body: 2MiB
  timeout: 90s
refresh:
  timeout: 1m
  lease_ttl: 45s
providers:
  - name: acme
    token_url: https://acme.example/token
    client_id: fake
    client_secret_env: ACME_SECRET
    refresh_window: 10m
    default_expires_in: 2h
    refresh_token_lifetime: 2160h
    refresh_idle_timeout: 720h
    rotation: rotate_grace
    rotation_grace: 1m30s
    token_rate_limit: 0.5
    token_rate_burst: 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.MaxReplayBody != 2<<20 || c.Proxy.Timeout != 90*time.Second || c.Refresh.Timeout != time.Minute || c.Refresh.LeaseTTL != 45*time.Second {
		t.Errorf("proxy/refresh = %+v %+v", c.Proxy, c.Refresh)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cat.Get("acme")
	if p.RefreshWindow != 10*time.Minute || p.DefaultExpiresIn != 2*time.Hour || p.RefreshTokenLifetime != 90*24*time.Hour ||
		p.RefreshIdleTimeout != 30*24*time.Hour || p.RotationGrace != 90*time.Second || p.TokenRateLimit != 0.5 || p.TokenRateBurst != 2 {
		t.Errorf("provider durations not parsed: %+v", p.LogValue())
	}

	for in, want := range map[string]int64{"4096": 4096, "512KiB": 512 << 10, "1 GiB": 1 << 30, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1MB", "lots", "1.5MiB", "-", "99999999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// loadAndValidate returns Load's error, or else Validate's.
func loadAndValidate(t *testing.T, yaml string) error {
	t.Helper()
	c, err := Load(writeConfig(t, yaml))
	if err != nil {
		return err
	}
	return c.Validate()
}

const goodProvider = `
providers:
  - name: acme
    token_url: https://acme.example/token
    client_id: fake
`

func TestBadInputNamesField(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"provider duration", goodProvider + "    refresh_window: 5 minutes\n", `providers[0].refresh_window: "5 minutes" is not a duration`},
		{"second provider duration", goodProvider + "  - name: beta\n    token_url: https://b.example/t\n    client_id: x\n    default_expires_in: 1d\n", `providers[1].default_expires_in: "1d" is not a duration`},
		{"proxy timeout", "proxy:\n  timeout: soon\n", `proxy.timeout: "soon" is not a duration`},
		{"lease ttl", "refresh:\n  lease_ttl: 30\n", `refresh.lease_ttl: "30" is not a duration`},
		{"negative lease ttl", "refresh:\n  lease_ttl: -1s\n", "refresh.lease_ttl: must be positive, got -1s"},
		{"nanosecond lease ttl", "refresh:\n  lease_ttl: 2ns\n", "refresh.lease_ttl: lease TTL 2ns is shorter than the minimum 1s"},
		{"lease no longer than a call", "refresh:\n  timeout: 30s\n  lease_ttl: 30s\n", "refresh.lease_ttl: lease TTL 30s must exceed the refresh timeout 30s by more than 5s"},
		{"on-error interval", "refresh:\n  on_error_interval: -5s\n", "refresh.on_error_interval: must be positive, got -5s"},
		{"replay body", "proxy:\n  max_replay_body: lots\n", `proxy.max_replay_body: "lots" is not a size`},
		{"negative replay body", "proxy:\n  max_replay_body: -5\n", "proxy.max_replay_body: must not be negative"},
		{"database scheme", "database: mysql://db.example/tb\n", `database: unknown scheme "mysql"`},
		{"database no scheme", "database: ./tb.db\n", "database: no scheme (want sqlite:<path> or postgres://…)"},
		{"database empty sqlite", "database: 'sqlite:'\n", "database: sqlite: needs a file path"},
		{"listen port", "listen: '8080'\n", `listen: "8080" is not host:port`},
		{"listen service", "listen: localhost:http\n", `listen: "localhost:http" is not host:port`},
		{"log level", "log_level: verbose\n", `log_level: "verbose" is not one of debug, info, warn, error`},
		{"log format", "log_format: xml\n", `log_format: "xml" is not one of text, json`},
		{"public url", "public_url: ftp://broker.example\n", "public_url: must be an absolute http or https URL"},
		{"unknown profile", goodProvider + "    profile: gihub\n", `providers[0].profile: unknown profile "gihub" (did you mean "github"? built-ins: atlassian, github,`},
		{"missing name", "providers:\n  - token_url: https://a.example/t\n    client_id: x\n", "providers[0].name: required"},
		{"duplicate name", goodProvider + "  - name: acme\n    token_url: https://a.example/t\n    client_id: y\n", `providers[1].name: "acme" is already used by providers[0]`},
		{"refresh_on too high", goodProvider + "    refresh_on: [401, 700]\n", "providers[0].refresh_on[1]: 700 is not an HTTP status (100-599)"},
		{"refresh_on zero", goodProvider + "    refresh_on: [0]\n", "providers[0].refresh_on[0]: 0 is not an HTTP status (100-599)"},
		{"refresh_on not a number", goodProvider + "    refresh_on: [stale]\n", "providers[0].refresh_on[0]: \"stale\" must be a whole number"},
		{"http token url", "providers:\n  - name: acme\n    token_url: http://acme.example/token\n    client_id: x\n", "providers[0].token_url: must be an absolute https URL"},
		{"no client id", "providers:\n  - name: acme\n    token_url: https://acme.example/token\n", "providers[0].client_id: required"},
		{"built-in without client id", "providers:\n  - name: google\n", "providers[0].client_id: required"},
		{"template without vars", "providers:\n  - name: zendesk\n    client_id: x\n", "providers[0].token_url: has unresolved placeholder {subdomain}: set vars.subdomain"},
		{"var typo", "providers:\n  - name: zendesk\n    client_id: x\n    vars: {subdomain: acme, subdomian: acme}\n", "providers[0].vars.subdomian: is not used by any URL"},
		{"auth style", goodProvider + "    auth_style: basic\n", `providers[0].auth_style: "basic" is not one of auto, header, params`},
		{"rotation", goodProvider + "    rotation: yes\n", `providers[0].rotation: "yes" is not one of`},
		{"secret env unset", goodProvider + "    client_secret_env: TOKENBROKER_TEST_SURELY_UNSET\n", "providers[0].client_secret_env: environment variable TOKENBROKER_TEST_SURELY_UNSET is not set"},
		{"two documents", "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n", "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadAndValidate(t, tt.yaml)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not contain %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := loadAndValidate(t, "listen: nope\nlog_level: loud\n"+goodProvider+"    refresh_on: [1]\n")
	for _, want := range []string{"listen:", "log_level:", "providers[0].refresh_on[0]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %s: %v", want, err)
		}
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"top level", "listen: 127.0.0.1:8080\nlisen: 127.0.0.1:9090\n", []string{`:2: lisen: unknown setting; did you mean "listen"?`}},
		{"provider", goodProvider + "    client_scret_env: X\n", []string{`:6: providers[0].client_scret_env: unknown setting; did you mean "client_secret_env"?`}},
		{"inline secret", goodProvider + "    client_secret: " + fakeSecret + "\n", []string{`providers[0].client_secret: unknown setting`, "use client_secret_env or client_secret_file"}},
		{"proxy", "proxy:\n  timout: 5s\n", []string{`:2: proxy.timout: unknown setting; did you mean "timeout"?`}},
		{"refresh", "refresh:\n  lease: 5s\n", []string{`refresh.lease: unknown setting; did you mean "lease_ttl"?`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load accepted an unknown field")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not contain %q: %v", want, err)
				}
			}
			if !strings.HasPrefix(err.Error(), "config: "+path+":") {
				t.Errorf("error does not name the file: %v", err)
			}
			if strings.Contains(err.Error(), fakeSecret) || strings.Contains(err.Error(), "fileConfig") {
				t.Errorf("error leaks a value or a Go type name: %v", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want fs.ErrNotExist naming the path", err)
	}
}

func TestProviderMerge(t *testing.T) {
	t.Setenv("G_SECRET", fakeSecret)
	c, err := Load(writeConfig(t, `
providers:
  - name: google
    client_id: fake.apps.googleusercontent.com
    client_secret_env: G_SECRET
    scopes: [openid, email]
    auth_params:
      prompt: ""          # removed
      login_hint: someone@example.com
    refresh_on: [401, 403]
  - name: ghe
    profile: github
    client_id: Iv1.x
    token_url: https://github.acme.example/login/oauth/access_token
    refresh_on: []
  - name: custom
    token_url: https://custom.example/token
    client_id: c
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	g, _ := cat.Get("google")
	if g.AuthParams["access_type"] != "offline" || g.AuthParams["login_hint"] != "someone@example.com" {
		t.Errorf("google auth_params not merged: %v", g.AuthParams)
	}
	if _, ok := g.AuthParams["prompt"]; ok {
		t.Error(`auth_params prompt: "" did not remove the inherited parameter`)
	}
	if !slices.Equal(g.Scopes, []string{"openid", "email"}) || !slices.Equal(g.RefreshOn, []int{401, 403}) {
		t.Errorf("google scopes %v refresh_on %v", g.Scopes, g.RefreshOn)
	}
	if g.RefreshIdleTimeout != provider.Builtins()["google"].RefreshIdleTimeout || g.Issuer != "https://accounts.google.com" {
		t.Error("google lost inherited fields")
	}
	if provider.Builtins()["google"].AuthParams["prompt"] != "consent" {
		t.Error("merging changed the built-in")
	}

	ghe, _ := cat.Get("ghe")
	if ghe.TokenURL != "https://github.acme.example/login/oauth/access_token" || ghe.AuthorizeURL != "https://github.com/login/oauth/authorize" || ghe.Rotation != provider.RotationRotate {
		t.Errorf("ghe did not inherit github with its override: %v", ghe)
	}
	if ghe.RefreshOn == nil || len(ghe.RefreshOn) != 0 {
		t.Errorf("refresh_on: [] gave %v, want an empty list (never)", ghe.RefreshOn)
	}

	custom, _ := cat.Get("custom")
	if custom.AuthStyle != provider.AuthStyleAuto || custom.RefreshWindow != provider.DefaultRefreshWindow || custom.DisplayName != "custom" {
		t.Errorf("custom provider lacks defaults: %v", custom.LogValue())
	}
}

func TestDatabaseDSN(t *testing.T) {
	ok := []struct{ in, driver, dsn string }{
		{"sqlite:./data/tb.db", "sqlite", "./data/tb.db"},
		{"sqlite:///var/lib/tb.db", "sqlite", "/var/lib/tb.db"},
		{"sqlite:tb.db?_pragma=busy_timeout(5000)", "sqlite", "tb.db?_pragma=busy_timeout(5000)"},
		{"postgres://tb@db.example:5432/tb?sslmode=verify-full", "postgres", "postgres://tb@db.example:5432/tb?sslmode=verify-full"},
		{"postgresql:///tb?host=/run/postgresql", "postgres", "postgresql:///tb?host=/run/postgresql"},
	}
	for _, tt := range ok {
		c := &Config{Database: tt.in}
		driver, dsn, err := c.DatabaseDSN()
		if err != nil || driver != tt.driver || dsn != tt.dsn {
			t.Errorf("DatabaseDSN(%q) = %q, %q, %v; want %q, %q", tt.in, driver, dsn, err, tt.driver, tt.dsn)
		}
	}
	bad := []struct{ in, want string }{
		{"", "database: required"},
		{"mysql://x/y", `unknown scheme "mysql"`},
		{"postgres:tb", "not a valid postgres:// URL"},
		{"postgres://tb:fake-db-password@db.example/tb%zz", "not a valid postgres:// URL"},
		{"host=db password=fake-db-password", "no scheme"},
	}
	for _, tt := range bad {
		c := &Config{Database: tt.in}
		_, _, err := c.DatabaseDSN()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DatabaseDSN(%q): err = %v, want %q", tt.in, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "fake-db-password") {
			t.Errorf("DatabaseDSN(%q): error repeats the password", tt.in)
		}
	}
}

func TestLogValueHidesDatabasePassword(t *testing.T) {
	for _, db := range []string{
		"postgres://tb:fake-db-password@db.example/tb",
		"postgres://tb@db.example/tb?password=fake-db-password",
		"host=db password=fake-db-password",
	} {
		c := &Config{Database: db, Providers: []ProviderConfig{{Name: "acme"}}}
		c.SetDefaults()
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
		if strings.Contains(buf.String(), "fake-db-password") {
			t.Errorf("logged config contains the database password (%q)", db)
		}
		if !strings.Contains(buf.String(), `"providers":["acme"]`) {
			t.Errorf("logged config lacks the provider names: %s", buf.String())
		}
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
