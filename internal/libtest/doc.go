// Package libtest tests the library modules (client, client/remote, oauth)
// against real peers the library must not depend on: the fosite
// authorization server (internal/authztest) and real tokenbroker server
// processes. The tests live in the server's module so that a program
// importing the library never resolves fosite, pgx or SQLite
// (docs/library.md, "Modules").
package libtest
