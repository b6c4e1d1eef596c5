// Package audit records who did what to which connection, off the request
// path: [Recorder.Record] only queues an entry; a background loop writes
// queued entries to the store in batches (one transaction per batch),
// optionally copies each as a JSON line to a stream for a SIEM, and
// deletes entries older than the retention period. docs/security.md
// describes the trail and what it costs.
package audit
