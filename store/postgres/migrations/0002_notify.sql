-- Every write that moves a connection's version (not lease renewals) is
-- announced to the other replicas, which drop what they cached of it.
CREATE FUNCTION tokenbroker_notify_connection() RETURNS trigger AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		PERFORM pg_notify('tokenbroker_connections', OLD.id);
		RETURN OLD;
	END IF;
	PERFORM pg_notify('tokenbroker_connections', NEW.id);
	RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER connections_notify_insert_delete
	AFTER INSERT OR DELETE ON connections
	FOR EACH ROW EXECUTE FUNCTION tokenbroker_notify_connection();

CREATE TRIGGER connections_notify_update
	AFTER UPDATE ON connections
	FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
	EXECUTE FUNCTION tokenbroker_notify_connection();
