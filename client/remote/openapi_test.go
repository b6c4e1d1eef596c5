package remote

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Client covers every operation of the server's OpenAPI document, with
// the same operationId, method and path, and nothing the document lacks.
// The document is read from the repository (this module lives in it).
func TestOperationsMatchOpenAPI(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "server", "openapi.json"))
	if err != nil {
		t.Fatalf("reading the server's OpenAPI document: %v", err)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // "METHOD /path" -> operationId
	for path, item := range doc.Paths {
		for method, o := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				documented[strings.ToUpper(method)+" "+path] = o.OperationID
			}
		}
	}
	covered := map[string]string{}
	for _, o := range operations() {
		key := o.method + " " + o.path
		if _, dup := covered[key]; dup {
			t.Errorf("operation %s is in the client's table twice", key)
		}
		covered[key] = o.name
	}
	for key, id := range documented {
		got, ok := covered[key]
		switch {
		case !ok:
			t.Errorf("openapi.json documents %s (%s); the client has no method for it", key, id)
		case got != id:
			t.Errorf("%s: the client calls it %q, openapi.json %q", key, got, id)
		}
	}
	for key := range covered {
		if _, ok := documented[key]; !ok {
			t.Errorf("the client calls %s, which openapi.json does not document", key)
		}
	}
	if len(documented) < 15 {
		t.Fatalf("only %d operations documented; the document was not read", len(documented))
	}
}
