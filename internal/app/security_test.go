package app_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// auditEntries reads GET /v1/audit with the e2e's admin key.
func (e *e2e) auditEntries(query string) []map[string]any {
	e.t.Helper()
	code, body := e.do(http.MethodGet, "/v1/audit?"+query, nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /v1/audit: %d %v", code, body)
	}
	raw, _ := body["entries"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		out = append(out, r.(map[string]any))
	}
	return out
}

func actions(entries []map[string]any) map[string]bool {
	m := map[string]bool{}
	for _, e := range entries {
		m[fmt.Sprint(e["action"])] = true
	}
	return m
}

// TestAuditSurvivesRestart: the audit trail of a served process is in the
// database after a restart, is streamed as JSON lines, and nowhere — the
// API, the stream, the database file — holds a token value.
func TestAuditSurvivesRestart(t *testing.T) {
	streamPath := filepath.Join(t.TempDir(), "audit.jsonl")
	e := newE2EWith(t, "audit:\n  stream: "+streamPath+"\n")
	access, refresh, _ := e.authz.IssueTokens(t, "offline")
	if code, body := e.do(http.MethodPost, "/v1/connections", map[string]any{
		"id": "alice", "provider": "acme", "access_token": access, "refresh_token": refresh, "expires_in": 3600,
	}); code != http.StatusCreated {
		t.Fatalf("import: %d %v", code, body)
	}
	e.token("alice")
	if code, _ := e.do(http.MethodGet, "/v1/proxy/alice/v1/things", nil); code != http.StatusOK {
		t.Fatalf("proxy: %d", code)
	}
	// Visible within a couple of seconds (the batch interval): wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for !actions(e.auditEntries("connection_id=alice"))["proxy"] {
		if time.Now().After(deadline) {
			t.Fatalf("the proxied call never reached the audit trail")
		}
		time.Sleep(50 * time.Millisecond)
	}

	e.stop()
	e.start()
	got := actions(e.auditEntries("connection_id=alice"))
	for _, want := range []string{"connection.import", "token.read", "proxy"} {
		if !got[want] {
			t.Errorf("after restart the trail lacks %s: %v", want, got)
		}
	}
	e.stop()

	stream, err := os.ReadFile(streamPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(stream), []byte("\n"))
	if len(lines) < 3 {
		t.Fatalf("the stream has %d lines, want the entries", len(lines))
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal(l, &v); err != nil || v["action"] == nil || v["time"] == nil {
			t.Fatalf("stream line %q is not an entry: %v", l, err)
		}
	}
	api, _ := json.Marshal(got)
	db := readAll(t, filepath.Join(e.dir, "tokenbroker.db"))
	for _, secret := range []string{access, refresh, e.key} {
		for name, hay := range map[string][]byte{"stream": stream, "api": api, "database file": db} {
			if bytes.Contains(hay, []byte(secret)) {
				t.Errorf("the %s holds a token or key value", name)
			}
		}
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	var all []byte
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err == nil {
			all = append(all, b...)
		}
	}
	return all
}

// replica is one tokenbroker process on a shared PostgreSQL database.
type replica struct {
	a    *app.App
	base string
	stop func()
}

func startReplica(t *testing.T, cfgText string, now func() time.Time) *replica {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{Logger: slog.New(slog.DiscardHandler), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln, nil) }()
	r := &replica{a: a, base: "http://" + ln.Addr().String()}
	r.stop = func() { cancel(); <-done; a.Close() }
	t.Cleanup(r.stop)
	return r
}

func (r *replica) status(t *testing.T, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.base+"/v1/connections", nil) // needs an admin key
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestKeyRevocationReachesOtherReplicas: a key revoked through one replica
// stops working on another that has it cached, through PostgreSQL's
// change feed. The clocks stand still, so the key cache's TTL cannot be
// what ends it.
func TestKeyRevocationReachesOtherReplicas(t *testing.T) {
	dsn := pgtest.FreshDatabase(t)
	dir := t.TempDir()
	clock := fakeclock.New(time.Now())
	cfgText := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %[1]s\ndatabase: %[2]q\nencryption_keys_file: %[1]s/keys\nscheduler:\n  disabled: true\n", dir, dsn)
	a := startReplica(t, cfgText, clock.Now)
	var out bytes.Buffer
	if _, err := a.a.BootstrapAPIKey(t.Context(), &out, clock.Now()); err != nil {
		t.Fatal(err)
	}
	admin := keyRe.FindString(out.String())
	b := startReplica(t, cfgText, clock.Now)
	if s := b.status(t, admin); s != http.StatusOK {
		t.Fatalf("replica b: %d, want 200 (and the key cached)", s)
	}
	keys, err := a.a.Store.ListAPIKeys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListAPIKeys: %v %v", keys, err)
	}
	if err := a.a.Store.RevokeAPIKey(t.Context(), keys[0].ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for b.status(t, admin) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("replica b still accepts the revoked key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := a.status(t, admin); s != http.StatusUnauthorized {
		t.Errorf("replica a: %d, want 401", s)
	}
	if !strings.HasPrefix(admin, "tbk_") {
		t.Errorf("bootstrap key %q", admin)
	}
}

// TestServeTLS: with tls_cert_file and tls_key_file, serve answers over
// TLS with that certificate, and plain http is refused; the dashboard's
// cookies are Secure.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pool := writeTLSPair(t, certFile, keyFile)
	cfgText := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %[1]s\ntls_cert_file: %[2]s\ntls_key_file: %[3]s\nscheduler:\n  disabled: true\n", dir, certFile, keyFile)
	r := startReplica(t, cfgText, time.Now)
	base := strings.Replace(r.base, "http://", "https://", 1)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("https /healthz: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	resp, err = client.Get(base + "/ui/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if !c.Secure {
			t.Errorf("cookie %s is not Secure over TLS", c.Name)
		}
	}
	if resp, err := http.Get(r.base + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain http was served on the TLS port")
		}
	}
}

func writeTLSPair(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
