package server

import (
	_ "embed"
	"net/http"
	"strconv"
)

// openAPIDocument describes the v1 API (OpenAPI 3.0). openapi_test.go
// checks it against the route table both ways, so a route cannot be added
// without being documented. The dashboard (/ui/) is HTML for people and is
// not in it.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPI serves the document. It sits behind an API key like the rest of
// the API: the route walk in auth_test.go holds every route but the probes
// and the two browser-facing connect routes to that.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDocument)
}
