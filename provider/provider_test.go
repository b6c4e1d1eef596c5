package provider

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const fakeSecret = "fake-client-secret-do-not-use"

// activate turns a built-in into what a configuration would make of it.
func activate(t *testing.T, p Profile) Profile {
	t.Helper()
	p.ClientID = "fake-client-id"
	if vars := p.TemplateVars(); len(vars) > 0 {
		m := map[string]string{}
		for _, v := range vars {
			m[v] = "acme"
		}
		var err error
		if p, err = p.Expand(m); err != nil {
			t.Fatalf("%s: Expand: %v", p.Name, err)
		}
	}
	return p
}

func TestBuiltinsValidateOnceConfigured(t *testing.T) {
	b := Builtins()
	for _, name := range []string{"github", "google", "microsoft", "salesforce", "slack", "atlassian", "hubspot", "xero", "zendesk", "quickbooks"} {
		t.Run(name, func(t *testing.T) {
			p, ok := b[name]
			if !ok {
				t.Fatalf("no built-in %q", name)
			}
			if p.Name != name {
				t.Errorf("Name = %q, want %q", p.Name, name)
			}
			if p.ClientID != "" || p.ClientSecret != "" || p.ClientSecretEnv != "" || p.ClientSecretFile != "" {
				t.Error("built-in carries client credentials")
			}
			if p.TokenURL == "" || p.AuthorizeURL == "" || p.DisplayName == "" {
				t.Error("built-in lacks a token URL, authorize URL or display name")
			}

			// Without a client id it is not usable.
			var fe *FieldError
			if err := p.Validate(); !errors.As(err, &fe) || !strings.Contains(err.Error(), "providers["+name+"].client_id: required") {
				t.Errorf("unconfigured built-in: err = %v, want client_id required", err)
			}

			p = activate(t, p)
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if err := p.WithDefaults().Validate(); err != nil {
				t.Errorf("Validate after defaults: %v", err)
			}
			if _, err := NewCatalog([]Profile{p}); err != nil {
				t.Errorf("NewCatalog: %v", err)
			}
		})
	}
}

func TestBuiltinValues(t *testing.T) {
	b := Builtins()
	tests := []struct {
		name string
		ok   bool
	}{
		{"github token url", b["github"].TokenURL == "https://github.com/login/oauth/access_token"},
		{"github rotates", b["github"].Rotation == RotationRotate},
		{"github params", b["github"].AuthStyle == AuthStyleParams},
		{"google offline", b["google"].AuthParams["access_type"] == "offline" && b["google"].AuthParams["prompt"] == "consent"},
		{"google no rotation", b["google"].Rotation == RotationNone},
		{"google idle 6 months", b["google"].RefreshIdleTimeout == 4380*time.Hour},
		{"google revocation", b["google"].RevocationURL == "https://oauth2.googleapis.com/revoke"},
		{"microsoft keeps old", b["microsoft"].Rotation == RotationRotateKeepOld},
		{"microsoft 90 days", b["microsoft"].RefreshTokenLifetime == 90*24*time.Hour},
		{"salesforce 2h default", b["salesforce"].DefaultExpiresIn == 2*time.Hour},
		{"salesforce introspection", b["salesforce"].IntrospectionURL == "https://login.salesforce.com/services/oauth2/introspect"},
		{"slack rotates", b["slack"].Rotation == RotationRotate},
		{"atlassian grace", b["atlassian"].Rotation == RotationRotateGrace && b["atlassian"].RotationGrace == 10*time.Minute},
		{"atlassian audience", b["atlassian"].AuthParams["audience"] == "api.atlassian.com"},
		{"atlassian idle", b["atlassian"].RefreshIdleTimeout == 90*24*time.Hour},
		{"hubspot no rotation", b["hubspot"].Rotation == RotationNone},
		{"xero grace", b["xero"].Rotation == RotationRotateGrace && b["xero"].RotationGrace == 30*time.Minute},
		{"xero idle", b["xero"].RefreshIdleTimeout == 720*time.Hour},
		{"zendesk template", slices.Equal(b["zendesk"].TemplateVars(), []string{"subdomain"})},
		{"quickbooks idle", b["quickbooks"].RefreshIdleTimeout == 2400*time.Hour},
		{"quickbooks header", b["quickbooks"].AuthStyle == AuthStyleHeader},
	}
	for _, tt := range tests {
		if !tt.ok {
			t.Errorf("built-in value wrong: %s", tt.name)
		}
	}
}

func TestBuiltinsReturnsIndependentCopies(t *testing.T) {
	a := Builtins()
	g := a["google"]
	g.AuthParams["prompt"] = "none"
	g.RefreshOn[0] = 999
	a["microsoft"].Scopes[0] = "changed"
	a["github"] = Profile{Name: "evil"}
	delete(a, "slack")

	b := Builtins()
	if b["google"].AuthParams["prompt"] != "consent" || b["google"].RefreshOn[0] != 401 {
		t.Error("changing one Builtins result changed the next one's maps or slices")
	}
	if b["microsoft"].Scopes[0] != "offline_access" || b["github"].Name != "github" {
		t.Error("changing one Builtins result changed the next one")
	}
	if _, ok := b["slack"]; !ok {
		t.Error("deleting from one Builtins result changed the next one")
	}
}

func validProfile() Profile {
	return Profile{
		Name:         "acme",
		TokenURL:     "https://login.acme.example/oauth/token",
		AuthorizeURL: "https://login.acme.example/oauth/authorize",
		ClientID:     "fake-client-id",
	}
}

func TestValidateNamesField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Profile)
		want   string
	}{
		{"http token url", func(p *Profile) { p.TokenURL = "http://login.acme.example/token" }, "providers[acme].token_url: must be an absolute https URL"},
		{"relative url", func(p *Profile) { p.TokenURL = "/oauth/token" }, "providers[acme].token_url: must be an absolute https URL"},
		{"ftp url", func(p *Profile) { p.AuthorizeURL = "ftp://acme.example/x" }, "providers[acme].authorize_url: must be an absolute https URL"},
		{"not a url", func(p *Profile) { p.RevocationURL = "https://%zz" }, "providers[acme].revocation_url: must be an absolute https URL"},
		{"credentials", func(p *Profile) { p.IntrospectionURL = "https://user:pw@acme.example/i" }, "providers[acme].introspection_url: must not contain credentials"},
		{"fragment", func(p *Profile) { p.TokenURL = "https://acme.example/t#x" }, "providers[acme].token_url: must not have a fragment"},
		{"issuer query", func(p *Profile) { p.Issuer = "https://acme.example?x=1" }, "providers[acme].issuer: must not have a query"},
		{"api base query", func(p *Profile) { p.APIBaseURL = "https://api.acme.example/?v=1" }, "providers[acme].api_base_url: must not have a query"},
		{"placeholder", func(p *Profile) { p.TokenURL = "https://{tenant}.acme.example/t" }, "providers[acme].token_url: has unresolved placeholder {tenant}: set vars.tenant"},
		{"brace", func(p *Profile) { p.TokenURL = "https://{}.acme.example/t" }, "providers[acme].token_url: has an empty or unbalanced {placeholder}"},
		{"no token url", func(p *Profile) { p.TokenURL = "" }, "providers[acme].token_url: required (or set issuer"},
		{"no client id", func(p *Profile) { p.ClientID = "" }, "providers[acme].client_id: required"},
		{"no name", func(p *Profile) { p.Name = "" }, "providers[].name: required"},
		{"bad name", func(p *Profile) { p.Name = "Acme Corp" }, "providers[Acme Corp].name: must be"},
		{"two secret sources", func(p *Profile) { p.ClientSecretEnv = "X"; p.ClientSecretFile = "/x" }, "providers[acme].client_secret_file: set only one"},
		{"auth style", func(p *Profile) { p.AuthStyle = "basic" }, `providers[acme].auth_style: "basic" is not one of auto, header, params`},
		{"rotation", func(p *Profile) { p.Rotation = "sometimes" }, `providers[acme].rotation: "sometimes" is not one of`},
		{"grace without rotate_grace", func(p *Profile) { p.Rotation = RotationRotate; p.RotationGrace = time.Minute }, "providers[acme].rotation_grace: only applies with rotation: rotate_grace"},
		{"status too high", func(p *Profile) { p.RefreshOn = []int{401, 600} }, "providers[acme].refresh_on[1]: 600 is not an HTTP status (100-599)"},
		{"status too low", func(p *Profile) { p.RefreshOn = []int{99} }, "providers[acme].refresh_on[0]: 99 is not an HTTP status"},
		{"negative window", func(p *Profile) { p.RefreshWindow = -time.Second }, "providers[acme].refresh_window: -1s is negative"},
		{"negative default", func(p *Profile) { p.DefaultExpiresIn = -time.Hour }, "providers[acme].default_expires_in: -1h0m0s is negative"},
		{"negative idle", func(p *Profile) { p.RefreshIdleTimeout = -time.Hour }, "providers[acme].refresh_idle_timeout: -1h0m0s is negative"},
		{"window vs default", func(p *Profile) { p.DefaultExpiresIn = 5 * time.Minute }, "providers[acme].refresh_window: 5m0s is not shorter than default_expires_in (5m0s)"},
		{"scope with space", func(p *Profile) { p.Scopes = []string{"read", "read write"} }, `providers[acme].scopes[1]: "read write" is not a valid scope token`},
		{"empty scope", func(p *Profile) { p.Scopes = []string{""} }, `providers[acme].scopes[0]: "" is not a valid scope token`},
		{"reserved auth param", func(p *Profile) { p.AuthParams = map[string]string{"redirect_uri": "https://evil.example"} }, "providers[acme].auth_params.redirect_uri: is set by the authorization flow"},
		{"NaN rate", func(p *Profile) { p.TokenRateLimit = math.NaN() }, "providers[acme].token_rate_limit: must be a non-negative number"},
		{"negative rate", func(p *Profile) { p.TokenRateLimit = -1 }, "providers[acme].token_rate_limit: must be a non-negative number"},
		{"negative burst", func(p *Profile) { p.TokenRateBurst = -1 }, "providers[acme].token_rate_burst: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validProfile()
			tt.change(&p)
			err := p.Validate()
			if err == nil {
				t.Fatal("Validate accepted the profile")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error is not a *FieldError")
			}
		})
	}
}

func TestValidateDoesNotEchoURLs(t *testing.T) {
	p := validProfile()
	p.TokenURL = "https://user:fake-password@acme.example/token"
	err := p.Validate()
	if err == nil || strings.Contains(err.Error(), "fake-password") {
		t.Errorf("err = %v; want an error that does not repeat the URL", err)
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Profile)
	}{
		{"minimal", func(p *Profile) {}},
		{"issuer only", func(p *Profile) { p.TokenURL = ""; p.Issuer = "https://login.acme.example" }},
		{"http loopback ipv4", func(p *Profile) { p.TokenURL = "http://127.0.0.1:8080/token" }},
		{"http localhost", func(p *Profile) { p.TokenURL = "http://localhost/token" }},
		{"http loopback ipv6", func(p *Profile) { p.TokenURL = "http://[::1]:9/token" }},
		{"token url with query", func(p *Profile) { p.TokenURL = "https://acme.example/token?api-version=2" }},
		{"empty refresh_on", func(p *Profile) { p.RefreshOn = []int{} }},
		{"all fields", func(p *Profile) {
			p.AuthStyle, p.Rotation, p.RotationGrace = AuthStyleHeader, RotationRotateGrace, time.Minute
			p.Scopes = []string{"read", "write:all"}
			p.AuthParams = map[string]string{"prompt": "consent"}
			p.RefreshOn = []int{401, 403}
			p.DefaultExpiresIn, p.RefreshWindow = time.Hour, 10*time.Minute
			p.TokenRateLimit, p.TokenRateBurst = 0.5, 3
			p.ClientSecretEnv = "ACME_SECRET"
		}},
	}
	for _, tt := range tests {
		p := validProfile()
		tt.change(&p)
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p := validProfile()
	p.ClientID = ""
	p.AuthStyle = "x"
	p.RefreshOn = []int{0}
	err := p.Validate()
	for _, want := range []string{".client_id:", ".auth_style:", ".refresh_on[0]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not report %s", err, want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	p := Profile{Name: "acme", TokenRateLimit: 2}.WithDefaults()
	if p.AuthStyle != AuthStyleAuto || p.Rotation != RotationRotate || p.RefreshWindow != 5*time.Minute ||
		!slices.Equal(p.RefreshOn, []int{401}) || p.DisplayName != "acme" || p.TokenRateBurst != 1 {
		t.Errorf("defaults not applied: %+v", p.LogValue())
	}
	kept := Profile{Name: "acme", AuthStyle: AuthStyleParams, RefreshOn: []int{}, RefreshWindow: time.Minute, DisplayName: "ACME"}.WithDefaults()
	if kept.AuthStyle != AuthStyleParams || kept.RefreshOn == nil || len(kept.RefreshOn) != 0 || kept.RefreshWindow != time.Minute || kept.DisplayName != "ACME" {
		t.Error("WithDefaults overwrote set fields (an empty refresh_on means never)")
	}
}

func TestExpand(t *testing.T) {
	z := Builtins()["zendesk"]
	got, err := z.Expand(map[string]string{"subdomain": "acme-support"})
	if err != nil {
		t.Fatal(err)
	}
	if got.TokenURL != "https://acme-support.zendesk.com/oauth/tokens" || got.APIBaseURL != "https://acme-support.zendesk.com/api/v2" {
		t.Errorf("expanded URLs: %s, %s", got.TokenURL, got.APIBaseURL)
	}
	if len(got.TemplateVars()) != 0 {
		t.Errorf("placeholders left: %v", got.TemplateVars())
	}
	if z.TokenURL != "https://{subdomain}.zendesk.com/oauth/tokens" {
		t.Error("Expand changed its receiver")
	}

	bad := []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"subdomain": "evil.example/x?"}, "providers[zendesk].vars.subdomain: must be letters"},
		{map[string]string{"subdomain": "evil.example#"}, "providers[zendesk].vars.subdomain: must be letters"},
		{map[string]string{"subdomain": ""}, "providers[zendesk].vars.subdomain: must be letters"},
		{map[string]string{"subdomain": "acme", "subdomian": "acme"}, "providers[zendesk].vars.subdomian: is not used by any URL"},
		{map[string]string{"Sub": "acme"}, "providers[zendesk].vars.Sub: invalid variable name"},
	}
	for _, tt := range bad {
		if _, err := z.Expand(tt.vars); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Expand(%v): err = %v, want %q", tt.vars, err, tt.want)
		}
	}

	z.ClientID = "fake-client-id"
	if err := z.Validate(); err == nil || !strings.Contains(err.Error(), "providers[zendesk].token_url: has unresolved placeholder {subdomain}: set vars.subdomain") {
		t.Errorf("unexpanded template: err = %v", err)
	}
}

func fakeEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestResolveSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	lf := write("lf", fakeSecret+"\n")
	crlf := write("crlf", fakeSecret+"\r\n")
	bare := write("bare", fakeSecret)
	empty := write("empty", "\n")
	env := fakeEnv(map[string]string{"ACME_SECRET": fakeSecret, "EMPTY": ""})

	ok := []struct {
		name string
		p    Profile
		want string
	}{
		{"env", Profile{Name: "acme", ClientSecretEnv: "ACME_SECRET"}, fakeSecret},
		{"file lf", Profile{Name: "acme", ClientSecretFile: lf}, fakeSecret},
		{"file crlf", Profile{Name: "acme", ClientSecretFile: crlf}, fakeSecret},
		{"file bare", Profile{Name: "acme", ClientSecretFile: bare}, fakeSecret},
		{"public client", Profile{Name: "acme"}, ""},
	}
	for _, tt := range ok {
		got, err := tt.p.ResolveSecret(env)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.ClientSecret != tt.want {
			t.Errorf("%s: resolved secret has %d bytes, want %d", tt.name, len(got.ClientSecret), len(tt.want))
		}
	}

	missing := filepath.Join(dir, "missing")
	bad := []struct {
		name  string
		p     Profile
		field string
		want  string
		is    error
	}{
		{"env unset", Profile{Name: "acme", ClientSecretEnv: "NOPE"}, "client_secret_env", "environment variable NOPE is not set", nil},
		{"env empty", Profile{Name: "acme", ClientSecretEnv: "EMPTY"}, "client_secret_env", "environment variable EMPTY is empty", nil},
		{"file missing", Profile{Name: "acme", ClientSecretFile: missing}, "client_secret_file", "cannot read " + missing, fs.ErrNotExist},
		{"file empty", Profile{Name: "acme", ClientSecretFile: empty}, "client_secret_file", empty + " is empty", nil},
		{"directory", Profile{Name: "acme", ClientSecretFile: dir}, "client_secret_file", "cannot read " + dir, nil},
		{"both", Profile{Name: "acme", ClientSecretEnv: "ACME_SECRET", ClientSecretFile: lf}, "client_secret_file", "set only one", nil},
	}
	for _, tt := range bad {
		_, err := tt.p.ResolveSecret(env)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: err = %v, want a FieldError on %s", tt.name, err, tt.field)
			continue
		}
		if !strings.Contains(err.Error(), "providers[acme]."+tt.field+": "+tt.want) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.want)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: error does not match %v", tt.name, tt.is)
		}
		if strings.Contains(err.Error(), fakeSecret) {
			t.Errorf("%s: error contains the secret", tt.name)
		}
	}
}

func TestResolveSecretUnreadableFile(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs Unix permissions enforced for the test user")
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(fakeSecret), 0o000); err != nil {
		t.Fatal(err)
	}
	_, err := Profile{Name: "acme", ClientSecretFile: path}.ResolveSecret(nil)
	if err == nil || !strings.Contains(err.Error(), "cannot read "+path) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("err = %v, want a permission error naming %s", err, path)
	}
	if err != nil && strings.Contains(err.Error(), fakeSecret) {
		t.Error("error contains the secret")
	}
}

func TestResolveSecretUsesProcessEnv(t *testing.T) {
	t.Setenv("TOKENBROKER_TEST_PROVIDER_SECRET", fakeSecret)
	got, err := Profile{Name: "acme", ClientSecretEnv: "TOKENBROKER_TEST_PROVIDER_SECRET"}.ResolveSecret(nil)
	if err != nil || got.ClientSecret != fakeSecret {
		t.Errorf("nil lookupEnv did not read the process environment (err %v)", err)
	}
}

func TestProfileNeverPrintsSecret(t *testing.T) {
	p := validProfile()
	p.ClientSecret = fakeSecret
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("p", "profile", p)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("p", "profile", &p)
	y, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":        fmt.Sprintf("%v", p),
		"%+v":       fmt.Sprintf("%+v", p),
		"%#v":       fmt.Sprintf("%#v", p),
		"%s ptr":    fmt.Sprintf("%s", &p), //lint:ignore S1025 the test is of what fmt's %s verb prints
		"%v slice":  fmt.Sprintf("%v", []Profile{p}),
		"slog text": text.String(),
		"slog json": js.String(),
		"yaml":      string(y),
	}
	for name, out := range outputs {
		if strings.Contains(out, fakeSecret) {
			t.Errorf("%s prints the client secret", name)
		}
	}
	if !strings.Contains(p.String(), "client_secret=<redacted>") || !strings.Contains(js.String(), `"client_secret":"<redacted>"`) {
		t.Errorf("String/LogValue do not mark the secret as redacted: %s", p.String())
	}
	if !strings.Contains(outputs["yaml"], "token_url: https://login.acme.example/oauth/token") {
		t.Errorf("yaml form lacks token_url:\n%s", y)
	}
}

func TestCatalog(t *testing.T) {
	a := validProfile()
	b := validProfile()
	b.Name = "beta"
	b.Scopes = []string{"read"}
	b.AuthParams = map[string]string{"prompt": "consent"}
	c, err := NewCatalog([]Profile{b, a})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Names(); !slices.Equal(got, []string{"acme", "beta"}) {
		t.Errorf("Names = %v", got)
	}
	got, ok := c.Get("beta")
	if !ok || got.RefreshWindow != DefaultRefreshWindow || got.AuthStyle != AuthStyleAuto {
		t.Errorf("Get(beta) = %v, %v; want defaults applied", got, ok)
	}
	got.Scopes[0] = "admin"
	got.AuthParams["prompt"] = "none"
	got.RefreshOn[0] = 500
	c.Names()[0] = "changed"
	again, _ := c.Get("beta")
	if again.Scopes[0] != "read" || again.AuthParams["prompt"] != "consent" || again.RefreshOn[0] != 401 || c.Names()[0] != "acme" {
		t.Error("changing what Get or Names returned changed the catalog")
	}
	b.Scopes[0] = "write"
	b.AuthParams["prompt"] = "login"
	if again, _ := c.Get("beta"); again.Scopes[0] != "read" || again.AuthParams["prompt"] != "consent" {
		t.Error("changing the input slice changed the catalog")
	}
	if _, ok := c.Get("nope"); ok {
		t.Error("Get found a profile that is not there")
	}
	var nilCat *Catalog
	if _, ok := nilCat.Get("acme"); ok || nilCat.Names() != nil {
		t.Error("nil catalog is not empty")
	}
}

func TestNewCatalogRejects(t *testing.T) {
	bad := validProfile()
	bad.Name = "bad"
	bad.TokenURL = "http://example.com/token"
	_, err := NewCatalog([]Profile{validProfile(), validProfile(), bad})
	for _, want := range []string{"providers[acme].name: duplicate provider name", "providers[bad].token_url: must be an absolute https URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}
