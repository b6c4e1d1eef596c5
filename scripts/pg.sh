#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests on this machine.
#
#   scripts/pg.sh start <dir> [--until-pid PID]
#       initdb a cluster in <dir>/data (or reuse the stopped one there),
#       start it, create database tokenbroker_test, and print its DSN on
#       stdout (also kept in <dir>/dsn).
#       The server listens on a unix socket in <dir>/sock and nowhere else;
#       when that path would be too long for a socket, it listens on
#       127.0.0.1 on a free port instead. With --until-pid, a watchdog stops
#       the server and deletes <dir> once process PID has exited, so a test
#       process that dies without cleaning up leaves nothing behind.
#   scripts/pg.sh stop <dir>
#       stop the server started in <dir> (a no-op if it is not running).
#   scripts/pg.sh dsn <dir>
#       print the DSN of the server started in <dir>.
#
# The server trusts every local connection and runs with fsync off: it is
# for tests only. PG_OPTS adds server options after those (a later -c of a
# setting wins): benchmarks use it to measure with commits made durable,
# PG_OPTS="-c fsync=on -c synchronous_commit=on -c full_page_writes=on". PostgreSQL refuses to run as root, so as root the server
# runs as the `postgres` OS user (created when missing) and <dir> is handed
# to that user. Binaries come from $PG_BIN, PATH, or /usr/lib/postgresql/*/bin,
# and as root are installed with apt-get when none is found.
#
# Messages go to stderr; stdout carries only the DSN.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }
log() { echo "pg.sh: $*" >&2; }

usage() {
	die "usage: pg.sh start <dir> [--until-pid PID] | pg.sh stop <dir> | pg.sh dsn <dir>"
}

# find_bin sets PG_BIN to a directory holding initdb, pg_ctl and postgres.
find_bin() {
	if [ -n "${PG_BIN:-}" ]; then
		[ -x "$PG_BIN/pg_ctl" ] || die "PG_BIN=$PG_BIN has no pg_ctl"
		return
	fi
	local p
	if p=$(command -v pg_ctl 2>/dev/null) && [ -x "$(dirname "$p")/initdb" ]; then
		PG_BIN=$(dirname "$(readlink -f "$p")")
		return
	fi
	for p in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$p/pg_ctl" ] && [ -x "$p/initdb" ]; then
			PG_BIN=$p
			return
		fi
	done
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		log "no PostgreSQL binaries found; installing the postgresql package"
		# Without recommended packages and quietly: dpkg's output goes to
		# a log, shown only on failure.
		aptlog=$(mktemp /tmp/apt-postgresql-XXXXXX.log)
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } >"$aptlog" 2>&1 ||
			{ tail -n 30 "$aptlog" >&2; die "apt-get install postgresql failed"; }
		rm -f "$aptlog"
		for p in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
			if [ -x "$p/pg_ctl" ]; then
				PG_BIN=$p
				return
			fi
		done
	fi
	die "no PostgreSQL server binaries (initdb, pg_ctl) found; install postgresql or set PG_BIN"
}

# as_pg runs a command as the user that owns the cluster.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		if command -v runuser >/dev/null 2>&1; then
			runuser -u postgres -- "$@"
		else
			su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
		fi
	else
		"$@"
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' 2>/dev/null && return
	local port
	for port in $(shuf -i 20000-60000 -n 50); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	die "found no free TCP port on 127.0.0.1"
}

cmd_start() {
	local dir=$1 until_pid=$2
	find_bin
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	local data=$dir/data sock=$dir/sock logfile=$dir/postgres.log

	if [ -f "$data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
		die "a server is already running in $dir (pg.sh stop $dir first)"
	fi

	if [ "$(id -u)" -eq 0 ]; then
		if ! id postgres >/dev/null 2>&1; then
			log "creating the postgres OS user"
			useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres ||
				die "could not create the postgres OS user"
		fi
		chown -R postgres: "$dir"
		as_pg test -w "$dir" -a -x "$dir" ||
			die "user postgres cannot use $dir: a parent directory is not searchable by it (choose a directory under /tmp)"
	fi
	as_pg mkdir -p "$sock"

	if [ ! -f "$data/PG_VERSION" ]; then
		as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
			as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
	fi

	# A unix socket path is limited to 107 bytes; ".s.PGSQL.NNNNN" adds 15.
	local tcp=0
	if [ ${#sock} -gt 90 ]; then
		tcp=1
	fi

	local attempt port opts dsn
	for attempt in 1 2 3 4 5; do
		opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
		opts="$opts -c max_connections=200 -c shared_buffers=32MB ${PG_OPTS:-}"
		if [ $tcp -eq 1 ]; then
			port=$(free_port)
			opts="$opts -c unix_socket_directories='' -c listen_addresses=127.0.0.1 -c port=$port"
			dsn="postgres://postgres@127.0.0.1:$port/tokenbroker_test?sslmode=disable"
		else
			port=5432
			opts="$opts -c unix_socket_directories='$sock' -c unix_socket_permissions=0777 -c listen_addresses=''"
			dsn="postgres://postgres@/tokenbroker_test?host=$sock&port=$port&sslmode=disable"
		fi
		if as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t 60 -o "$opts" start >/dev/null 2>&1; then
			break
		fi
		if [ $tcp -eq 0 ] || ! grep -q "could not bind" "$logfile" 2>/dev/null; then
			tail -n 20 "$logfile" >&2 2>/dev/null || true
			die "the server in $dir did not start (log above, full log in $logfile)"
		fi
		log "port $port was taken; trying another"
		if [ $attempt -eq 5 ]; then
			die "the server in $dir did not start: no free port after $attempt attempts"
		fi
	done

	local psql=$PG_BIN/psql
	[ -x "$psql" ] || psql=psql
	local host=$sock
	[ $tcp -eq 1 ] && host=127.0.0.1
	if ! as_pg "$psql" -X -q -h "$host" -p "$port" -U postgres -d postgres \
		-c "CREATE DATABASE tokenbroker_test" >/dev/null 2>"$dir/createdb.log"; then
		if ! grep -q "already exists" "$dir/createdb.log"; then
			cat "$dir/createdb.log" >&2
			as_pg "$PG_BIN/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
			die "could not create database tokenbroker_test"
		fi
	fi

	echo "$dsn" >"$dir/dsn"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dir/dsn"

	if [ -n "$until_pid" ]; then
		# The watchdog must not hold our stdout, or a caller reading the
		# DSN would wait for it to exit.
		setsid nohup bash -c '
			while kill -0 "$1" 2>/dev/null; do sleep 1; done
			"$2" stop "$3" && [ -f "$3/data/PG_VERSION" ] && rm -rf "$3"
		' pg-watchdog "$until_pid" "$(readlink -f "$0")" "$dir" </dev/null >/dev/null 2>&1 &
	fi
	echo "$dsn"
}

cmd_stop() {
	local dir=$1
	[ -d "$dir/data" ] || { log "no cluster in $dir; nothing to stop"; return 0; }
	find_bin
	if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		return 0
	fi
	as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 ||
		die "could not stop the server in $dir"
}

cmd_dsn() {
	[ -f "$1/dsn" ] || die "no server was started in $1"
	cat "$1/dsn"
}

[ $# -ge 2 ] || usage
action=$1 dir=$2
shift 2
case $action in
start)
	until_pid=
	while [ $# -gt 0 ]; do
		case $1 in
		--until-pid) [ $# -ge 2 ] || usage; until_pid=$2; shift 2 ;;
		*) usage ;;
		esac
	done
	cmd_start "$dir" "$until_pid"
	;;
stop) cmd_stop "$dir" ;;
dsn) cmd_dsn "$dir" ;;
*) usage ;;
esac
