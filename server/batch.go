package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store"
)

// batchMaxBody bounds the body of POST /v1/connections:batch. Imported
// connections are typically well under 1 KiB each, so a full batch of
// store.MaxBatch fits many times over; a larger body is refused with 413
// and the client sends fewer per request (docs/operations.md, "Importing
// many connections").
const batchMaxBody = 16 << 20

// batchRequest is the body of POST /v1/connections:batch. Items are kept
// raw so that a decoding error can name the item.
type batchRequest struct {
	Connections []json.RawMessage `json:"connections"`
}

// batchResponse answers a stored batch.
type batchResponse struct {
	Created int `json:"created"`
}

// importBatch stores many imported connections, all or none
// (docs/operations.md, "Importing many connections").
// Every item is what POST /v1/connections takes, with the same rules; an
// error names the first wrong item by its index and id.
func (s *Server) importBatch(w http.ResponseWriter, r *http.Request) {
	var req batchRequest
	if e, ok := decodeJSONUpTo(w, r, &req, max(s.maxBody, batchMaxBody)); !ok {
		s.writeError(w, r, e)
		return
	}
	switch {
	case req.Connections == nil:
		s.writeError(w, r, invalid("connections: is required: an array of connections as POST /v1/connections takes them"))
		return
	case len(req.Connections) == 0:
		s.writeError(w, r, invalid("connections: is empty"))
		return
	case len(req.Connections) > store.MaxBatch:
		s.writeError(w, r, invalid(fmt.Sprintf("connections: a batch holds at most %d connections, not %d; send several batches", store.MaxBatch, len(req.Connections))))
		return
	}
	ins := make([]broker.Import, len(req.Connections))
	for i, raw := range req.Connections {
		var item importRequest
		if err := decodeObject(bytes.NewReader(raw), &item); err != nil {
			s.writeError(w, r, invalid(itemPrefix(i, "")+itemJSONError(err)))
			return
		}
		if item.Grant != "" || item.Scopes != nil {
			s.writeError(w, r, invalid(itemPrefix(i, item.ID)+"grant: client-credentials connections are created one at a time with POST /v1/connections"))
			return
		}
		in, err := item.toImport()
		if err != nil {
			s.writeError(w, r, itemError(i, item.ID, classify(err, true)))
			return
		}
		ins[i] = in
	}
	info(r.Context()).auditDetail = "batch=" + strconv.Itoa(len(ins))
	if err := s.broker.CreateConnections(r.Context(), ins); err != nil {
		var ie *store.ItemError
		if errors.As(err, &ie) {
			e := classify(ie.Err, true)
			if e.status == http.StatusInternalServerError {
				s.fail(w, r, err) // logged, answered without detail
				return
			}
			s.writeError(w, r, itemError(ie.Index, ie.ID, e))
			return
		}
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusCreated, batchResponse{Created: len(ins)})
}

// itemPrefix names item i of a batch in an error message.
func itemPrefix(i int, id string) string {
	if id == "" || !broker.ValidID(id) {
		return fmt.Sprintf("connections[%d]: ", i)
	}
	return fmt.Sprintf("connections[%d] (id %q): ", i, id)
}

// itemError is e about item i of a batch: the same status and code, the
// message prefixed with the item.
func itemError(i int, id string, e apiError) apiError {
	e.message = itemPrefix(i, id) + e.message
	return e
}

// itemJSONError says what is wrong with one item's JSON.
func itemJSONError(err error) string {
	if errors.Is(err, errNotObject) {
		return "must be a JSON object"
	}
	if msg, ok := fieldProblem(err); ok {
		return msg
	}
	return "is not a valid JSON object"
}
