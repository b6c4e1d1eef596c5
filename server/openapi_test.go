package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// documentedOperations returns "METHOD /path" for every operation in the
// OpenAPI document.
func documentedOperations(t *testing.T, doc []byte) map[string]bool {
	t.Helper()
	var d struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(d.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", d.OpenAPI)
	}
	ops := map[string]bool{}
	for path, item := range d.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				ops[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	return ops
}

// routeOperations turns the route table into "METHOD /path" with OpenAPI's
// {name} parameters ({path...} becomes {path}); a pattern without a method
// stands for the methods a client may send. Routes outside the JSON API
// (the dashboard under /ui/) are left out.
func routeOperations() map[string]bool {
	ops := map[string]bool{}
	for _, rt := range routes() {
		method, path, ok := strings.Cut(rt.pattern, " ")
		methods := []string{method}
		if !ok {
			path = method
			methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
		}
		if strings.HasPrefix(path, "/ui/") {
			continue
		}
		path = strings.ReplaceAll(path, "...}", "}")
		for _, m := range methods {
			ops[m+" "+path] = true
		}
	}
	return ops
}

func TestOpenAPICoversRouteTable(t *testing.T) {
	doc := documentedOperations(t, openAPIDocument)
	routes := routeOperations()
	for op := range routes {
		if !doc[op] {
			t.Errorf("route %s is not in openapi.json", op)
		}
	}
	for op := range doc {
		if !routes[op] {
			t.Errorf("openapi.json documents %s, which is not a route", op)
		}
	}
	if len(routes) < 10 {
		t.Fatalf("only %d routes found; the route table was not read", len(routes))
	}
}

// TestOpenAPIRefsResolve: every $ref points at a component that exists.
func TestOpenAPIRefsResolve(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok {
				refs = append(refs, r)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
	if len(refs) == 0 {
		t.Fatal("no $ref found")
	}
	for _, r := range refs {
		parts := strings.Split(strings.TrimPrefix(r, "#/"), "/")
		var cur any = doc
		for _, p := range parts {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[p]
		}
		if cur == nil {
			t.Errorf("$ref %q does not resolve", r)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Public: it holds no secrets (the README says so).
	r := h.do("GET", "/v1/openapi.json", "", nil, nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, content type %q", r.status, r.header.Get("Content-Type"))
	}
	if !slices.Equal(r.body, openAPIDocument) {
		t.Errorf("served document differs from the embedded one")
	}
}
