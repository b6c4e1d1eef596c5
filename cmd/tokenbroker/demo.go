package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/demo"
)

// demoDataDir is where `serve --demo` keeps its data unless told
// otherwise, away from a real ./tokenbroker-data.
const demoDataDir = "./tokenbroker-demo"

// demoPrefix is where the sandbox is mounted on tokenbroker's own port.
const demoPrefix = "/demo"

// checkDemoListen refuses --demo anywhere but on a loopback address: the
// sandbox hands out tokens to whoever asks nicely.
func checkDemoListen(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usageErr("--demo runs a sandbox provider and listens on loopback only; listen is %q (use 127.0.0.1:PORT)", listen)
}

// setupDemo adds the sandbox provider "demo" to cfg, served at
// http://<addr>/demo on tokenbroker's own listener.
func setupDemo(cfg *config.Config, addr net.Addr) (*demo.Sandbox, error) {
	for _, p := range cfg.Providers {
		if p.Name == "demo" {
			return nil, fmt.Errorf("--demo adds a provider named demo, and the configuration already has one")
		}
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	secret := hex.EncodeToString(b[:])
	secretFile := filepath.Join(cfg.DataDir, "demo-client-secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	base := "http://" + addr.String() + demoPrefix
	sb := demo.New(demo.Options{BaseURL: base, ClientSecret: secret})
	cfg.Providers = append(cfg.Providers, config.ProviderConfig{
		Name:             "demo",
		DisplayName:      "Demo sandbox (not a real provider)",
		TokenURL:         base + demo.TokenPath,
		AuthorizeURL:     base + demo.AuthorizePath,
		RevocationURL:    base + demo.RevocationPath,
		APIBaseURL:       base + demo.APIPath,
		ClientID:         demo.ClientID,
		ClientSecretFile: secretFile,
		Scopes:           []string{"profile"},
		RefreshOn:        []int{http.StatusUnauthorized},
	})
	return sb, cfg.Validate()
}

// mountDemo serves the sandbox under /demo/ and tokenbroker elsewhere.
func mountDemo(sb *demo.Sandbox) func(http.Handler) http.Handler {
	return func(tb http.Handler) http.Handler {
		sh := sb.Handler(demoPrefix)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == demoPrefix || strings.HasPrefix(r.URL.Path, demoPrefix+"/") {
				sh.ServeHTTP(w, r)
				return
			}
			tb.ServeHTTP(w, r)
		})
	}
}

func demoBanner(w io.Writer, cfg *config.Config) {
	line := strings.Repeat("*", 78)
	fmt.Fprintf(w, `%[1]s
DEMO MODE: tokenbroker is also running a built-in SANDBOX provider "demo"
(authorization server and API) at %[2]s%[3]s/ — not a real provider.
Data: %[4]s. Loopback only. Never use --demo for real connections.
%[1]s
`, line, cfg.PublicURL, demoPrefix, cfg.DataDir)
}
