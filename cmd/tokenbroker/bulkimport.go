package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"sync"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newImportCmd) }

// Bounds of the bulk import's batches: the server takes at most 1000
// connections per request (store.MaxBatch).
const (
	defaultImportBatch = 500
	maxImportBatch     = 1000
	maxImportLine      = 1 << 20
)

const importLong = `Import many connections from JSON lines: one JSON object per line, each the
body of POST /v1/connections (id, provider, access_token, refresh_token,
expires_in or expires_at, ...). FILE is a file, or - (the default) for stdin.

Lines are sent in batches to POST /v1/connections:batch. A batch is stored
whole or not at all: when one line is wrong (or its id is taken), the error
names the line and nothing of its batch is stored; batches sent before it
stay stored. The count of stored connections is printed either way, so a
failed import can be resumed from the failing batch's first line.
Client-credentials connections are imported one at a time with
"tokenbroker connections import".`

// batchItem is one line of the input, kept raw: the server validates it.
type batchItem struct {
	line int
	raw  json.RawMessage
}

func newImportCmd(c *cli) *cobra.Command {
	var batch, parallel int
	cmd := &cobra.Command{
		Use:   "import [FILE]",
		Short: "import many connections from JSON lines (FILE or stdin)",
		Long:  importLong,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch < 1 || batch > maxImportBatch {
				return usageErr("--batch must be between 1 and %d", maxImportBatch)
			}
			if parallel < 1 || parallel > 16 {
				return usageErr("--parallel must be between 1 and 16")
			}
			in := c.stdin
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			n, err := bulkImport(cmd.Context(), api, in, batch, parallel)
			fmt.Fprintf(c.stdout, "imported %d connections\n", n)
			return err
		},
	}
	cmd.Flags().IntVar(&batch, "batch", defaultImportBatch, fmt.Sprintf("connections per request (at most %d)", maxImportBatch))
	cmd.Flags().IntVar(&parallel, "parallel", 2, "requests in flight")
	return cmd
}

// itemIndex finds the batch item an error message of the server names.
var itemIndex = regexp.MustCompile(`^connections\[(\d+)\]`)

// bulkImport reads JSON lines from in and sends them in batches, parallel
// at a time, until the input ends or a batch fails. It returns how many
// connections were stored.
func bulkImport(ctx context.Context, api *apiClient, in io.Reader, batch, parallel int) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []batchItem, parallel)
	var (
		mu       sync.Mutex
		stored   int
		firstErr error
	)
	failed := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for items := range batches {
				if ctx.Err() != nil {
					continue // drain
				}
				body := struct {
					Connections []json.RawMessage `json:"connections"`
				}{make([]json.RawMessage, len(items))}
				for i, it := range items {
					body.Connections[i] = it.raw
				}
				var out struct {
					Created int `json:"created"`
				}
				if err := api.do(ctx, "POST", "/v1/connections:batch", body, &out, nil); err != nil {
					failed(batchFailure(err, items))
					continue
				}
				mu.Lock()
				stored += out.Created
				mu.Unlock()
			}
		}()
	}
	readErr := readLines(ctx, in, batch, batches)
	close(batches)
	wg.Wait()
	if readErr != nil && firstErr == nil {
		firstErr = readErr
	}
	return stored, firstErr
}

// readLines sends the input's lines as batches of up to size.
func readLines(ctx context.Context, in io.Reader, size int, out chan<- []batchItem) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	var cur []batchItem
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if b[0] != '{' || !json.Valid(b) {
			return usageErr("line %d: not a JSON object (one connection per line, as POST /v1/connections takes it)", line)
		}
		cur = append(cur, batchItem{line: line, raw: append(json.RawMessage(nil), b...)})
		if len(cur) == size {
			select {
			case out <- cur:
			case <-ctx.Done():
				return nil
			}
			cur = nil
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return usageErr("line %d: longer than %d bytes", line+1, maxImportLine)
		}
		return err
	}
	if len(cur) > 0 {
		select {
		case out <- cur:
		case <-ctx.Done():
		}
	}
	return nil
}

// batchFailure names the input lines of a failed batch, and the line the
// server's error is about when it names an item.
func batchFailure(err error, items []batchItem) error {
	first, last := items[0].line, items[len(items)-1].line
	var ae *apiError
	if errors.As(err, &ae) {
		if m := itemIndex.FindStringSubmatch(ae.Message); m != nil {
			if i, convErr := strconv.Atoi(m[1]); convErr == nil && i < len(items) {
				return fmt.Errorf("line %d: %w (nothing of lines %d-%d was stored)", items[i].line, err, first, last)
			}
		}
	}
	if ae != nil && ae.Status/100 == 4 {
		return fmt.Errorf("lines %d-%d: %w (nothing of them was stored)", first, last, err)
	}
	// No answer, or a server failure: the batch may or may not have been
	// committed; importing it again tells (already_exists).
	return fmt.Errorf("lines %d-%d: %w (these may or may not have been stored)", first, last, err)
}
