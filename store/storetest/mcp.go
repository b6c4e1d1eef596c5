package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var mcpTests = []struct {
	name string
	fn   testFunc
}{
	{"ConnectionBinding", testMCPConnectionBinding},
	{"SessionServerURL", testMCPSessionServerURL},
	{"Registrations", testMCPRegistrations},
	{"SealedSecretCounted", testMCPSealedSecretCounted},
}

// testMCPSealedSecretCounted: a registration's sealed client secret needs
// its key as much as a token does.
func testMCPSealedSecretCounted(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	if _, err := s.PutMCPRegistration(ctx, store.MCPRegistration{Issuer: "https://as.example", ClientID: "c1",
		ClientSecret: sealedUnder("k-mcp"), Metadata: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.SealedKeyIDs(ctx)
	if err != nil || got["k-mcp"] != 1 {
		t.Fatalf("SealedKeyIDs = %v, %v; want k-mcp counted once", got, err)
	}
}

// testMCPConnectionBinding: a connection's MCP binding survives create,
// compare-and-swap and update, needed scopes change, and a connection
// without one reads back nil.
func testMCPConnectionBinding(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	c := minimalConnection("m1")
	c.Provider = store.ProviderMCP
	c.MCP = &store.MCP{ServerURL: "https://mcp.example/mcp", Resource: "https://mcp.example/mcp", Issuer: "https://as.example"}
	got := mustCreate(t, s, c)
	if got.MCP == nil || got.MCP.ServerURL != c.MCP.ServerURL {
		t.Fatalf("created MCP = %+v, want %+v", got.MCP, c.MCP)
	}
	read := mustGet(t, s, "m1")
	if read.MCP == nil || read.MCP.Issuer != "https://as.example" || read.MCP.Resource != "https://mcp.example/mcp" {
		t.Fatalf("read MCP = %+v", read.MCP)
	}
	upd, err := s.UpdateConnection(ctx, "m1", func(old store.Connection) (store.Connection, []store.Event, error) {
		old.MCP.NeededScopes = []string{"tools:write", "admin"}
		return old, nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(upd.MCP.NeededScopes, []string{"tools:write", "admin"}) {
		t.Errorf("after update NeededScopes = %q", upd.MCP.NeededScopes)
	}
	upd.TokenType = "Bearer"
	cas, err := s.CompareAndSwap(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	if cas.MCP == nil || !slices.Equal(cas.MCP.NeededScopes, []string{"tools:write", "admin"}) {
		t.Errorf("after CompareAndSwap MCP = %+v", cas.MCP)
	}
	plain := mustCreate(t, s, minimalConnection("p1"))
	if plain.MCP != nil {
		t.Errorf("connection without binding reads MCP = %+v", plain.MCP)
	}
	bad := minimalConnection("m2")
	bad.MCP = &store.MCP{ServerURL: "https://mcp.example/mcp"}
	if _, err := s.CreateConnection(ctx, bad); err == nil {
		t.Error("binding without resource and issuer stored")
	}
	if _, err := s.GetConnection(ctx, "m2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused binding left a row: %v", err)
	}
}

func testMCPSessionServerURL(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	cs := s
	sess := store.ConnectSession{ID: "sess-mcp-0000000000000000", ConnectionID: "m1", Provider: store.ProviderMCP,
		MCP: &store.MCP{ServerURL: "https://mcp.example/mcp", Resource: "https://mcp.example/mcp", Issuer: "https://as.example"}, Scopes: []string{"tools:read"}, ExpiresAt: clk.Now().Add(time.Minute)}
	if err := cs.CreateConnectSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	begun, err := cs.BeginConnectSession(ctx, sess.ID, stateHash("st"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if begun.MCP == nil || begun.MCP.Issuer != "https://as.example" {
		t.Errorf("begun MCP = %+v", begun.MCP)
	}
	got, err := cs.ConsumeConnectSession(ctx, stateHash("st"))
	if err != nil {
		t.Fatal(err)
	}
	if got.MCP == nil || got.MCP.ServerURL != sess.MCP.ServerURL || got.Provider != store.ProviderMCP {
		t.Errorf("consumed %+v", got)
	}
}

// testMCPRegistrations: one registration per issuer; put replaces; the
// sealed secret round-trips byte for byte; delete only removes the client
// it names, so a newer registration survives a late "forgot" from an old
// one.
func testMCPRegistrations(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	r := s
	if _, err := r.GetMCPRegistration(ctx, "https://as.example"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty store: err = %v, want ErrNotFound", err)
	}
	md := json.RawMessage(`{"issuer":"https://as.example","token_endpoint":"https://as.example/token"}`)
	secret := sealed("client-secret", 64)
	first, err := r.PutMCPRegistration(ctx, store.MCPRegistration{Issuer: "https://as.example", ClientID: "c1",
		ClientSecret: secret, TokenEndpointAuthMethod: "client_secret_basic", Method: "dynamic",
		RedirectURI: "https://tb.example/v1/connect/callback", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	if first.CreatedAt.IsZero() || !first.CreatedAt.Equal(first.UpdatedAt) {
		t.Errorf("timestamps %v %v", first.CreatedAt, first.UpdatedAt)
	}
	got, err := r.GetMCPRegistration(ctx, "https://as.example")
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal(got.Metadata, &a)
	_ = json.Unmarshal(md, &b)
	if got.ClientID != "c1" || !bytes.Equal(got.ClientSecret, secret) || got.Method != "dynamic" ||
		got.TokenEndpointAuthMethod != "client_secret_basic" || got.RedirectURI == "" || !jsonEqual(a, b) {
		t.Errorf("read back %+v", got)
	}
	if _, err := r.PutMCPRegistration(ctx, store.MCPRegistration{Issuer: "https://as.example", ClientID: ""}); err == nil {
		t.Error("registration without client id stored")
	}
	clk.Advance(time.Minute)
	second, err := r.PutMCPRegistration(ctx, store.MCPRegistration{Issuer: "https://as.example", ClientID: "c2", Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	if second.ClientSecret != nil || !second.CreatedAt.After(first.CreatedAt) {
		t.Errorf("replacement %+v", second)
	}
	if err := r.DeleteMCPRegistration(ctx, "https://as.example", "c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete of the replaced client: err = %v, want ErrNotFound", err)
	}
	if g, err := r.GetMCPRegistration(ctx, "https://as.example"); err != nil || g.ClientID != "c2" {
		t.Errorf("after stale delete: %+v, %v", g, err)
	}
	list, err := r.ListMCPRegistrations(ctx)
	if err != nil || len(list) != 1 || list[0].ClientID != "c2" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	resealed := sealed("resealed-secret", 48)
	if err := r.ResealMCPRegistration(ctx, "https://as.example", "c1", resealed); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reseal of a replaced client: err = %v, want ErrNotFound", err)
	}
	if err := r.ResealMCPRegistration(ctx, "https://as.example", "c2", resealed); err != nil {
		t.Fatal(err)
	}
	if g, _ := r.GetMCPRegistration(ctx, "https://as.example"); !bytes.Equal(g.ClientSecret, resealed) {
		t.Error("the resealed secret did not replace the old one")
	}
	if err := r.DeleteMCPRegistration(ctx, "https://as.example", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetMCPRegistration(ctx, "https://as.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after delete: err = %v", err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
