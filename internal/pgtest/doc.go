// Package pgtest gives tests a PostgreSQL database of their own.
//
// [FreshDatabase] creates an empty, uniquely named database for one test and
// drops it afterwards, on the server [DSN] names: the one in
// $TOKENBROKER_TEST_POSTGRES (scripts/test.sh starts one with scripts/pg.sh
// and exports it), or, when that is unset outside CI, a throwaway server the
// test binary starts for itself on first use. Each test gets its own
// database, so tests in different packages may share one server and run at
// the same time.
package pgtest
