//! The tables, indexes and functions of a store, created (or brought up to date) when it opens.
//!
//! Everything lives in the user's schema, functions included, so two stores in one database
//! never touch each other. The SQL text is a template: `@S` is the quoted schema, `@LOCK` the
//! schema's append-lock key and `@CHANNEL` its notification channel.

use dcb::{Error, Result};

use crate::connect::Connector;

/// Longest schema name accepted, so that the derived channel name fits PostgreSQL's 63-byte
/// identifier limit.
const MAX_SCHEMA_BYTES: usize = 48;

/// Key of the advisory lock that serialises migrations of every schema in a database, so that
/// two processes opening stores at once never race on `CREATE ... IF NOT EXISTS`.
const MIGRATION_LOCK: i64 = 0x0dcb_5c4e_3a00_0001;

/// The version of the tables and functions this build makes. Raise it with every change a build
/// of the previous version could not work with (a function's arguments or results, a table's
/// columns): a build refuses to open a schema that a build of a higher version migrated, rather
/// than reinstalling its own functions under the processes of that build, whose calls would then
/// fail until they restart. Functions of builds before versions were recorded count as version 0.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// Names derived from a validated schema name.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    /// The schema as written by the user.
    pub(crate) name: String,
    /// The schema as a quoted SQL identifier.
    pub(crate) quoted: String,
    /// The channel appends notify on, unquoted.
    pub(crate) channel: String,
}

impl Schema {
    /// Checks `name` (letters, digits and underscores, not starting with a digit) and derives
    /// the names used in SQL. Anything else is refused rather than escaped, because the name
    /// also becomes part of a channel name and of application-visible SQL.
    pub(crate) fn new(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= MAX_SCHEMA_BYTES
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid(format!(
                "schema name {name:?} must be 1 to {MAX_SCHEMA_BYTES} ASCII letters, digits or \
                 underscores, not starting with a digit"
            )));
        }
        Ok(Schema {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
            channel: format!("dcb_events_{name}"),
        })
    }

    /// Key of the transaction-scoped advisory lock that serialises this schema's appends. A
    /// collision with another schema's key only serialises the two stores together; it never
    /// breaks correctness.
    pub(crate) fn append_lock(&self) -> i64 {
        fnv1a("append", &self.name)
    }

    /// Key of the lock that serialises this schema's aggregate recorder inserts.
    pub(crate) fn recorder_lock(&self) -> i64 {
        fnv1a("recorder", &self.name)
    }

    /// Expands a template.
    pub(crate) fn sql(&self, template: &str) -> String {
        template
            .replace("@V", &SCHEMA_VERSION.to_string())
            .replace("@S", &self.quoted)
            .replace("@LOCK", &self.append_lock().to_string())
            .replace("@RLOCK", &self.recorder_lock().to_string())
            .replace("@CHANNEL", &self.channel)
    }

    /// The migration of the event store.
    pub(crate) fn store_migration(&self) -> Migration {
        Migration {
            part: "store",
            schema: self.name.clone(),
            quoted: self.quoted.clone(),
            function_names: vec![
                "append_batch".into(),
                "first_matches".into(),
                format!("store_protocol_v{SCHEMA_VERSION}"),
            ],
            relations: self.qualified(&["events", "events_type_position", "event_tags", "tracking"]),
            tables: self.sql(STORE_TABLES),
            functions: self.sql(&STORE_FUNCTIONS.replace("@FLUSH", FLUSH)),
        }
    }

    /// The migration of the aggregate recorder.
    pub(crate) fn recorder_migration(&self) -> Migration {
        Migration {
            part: "recorder",
            schema: self.name.clone(),
            quoted: self.quoted.clone(),
            function_names: vec![
                "insert_aggregate_batch".into(),
                format!("recorder_protocol_v{SCHEMA_VERSION}"),
            ],
            relations: self.qualified(&["aggregate_events"]),
            tables: self.sql(RECORDER_TABLES),
            functions: self.sql(RECORDER_FUNCTIONS),
        }
    }

    /// Names of relations in the schema, qualified with it.
    fn qualified(&self, names: &[&str]) -> Vec<String> {
        names.iter().map(|name| format!("{}.{name}", self.quoted)).collect()
    }
}

/// What a store or recorder needs in its schema: tables and indexes, created when one of them is
/// missing (or the functions are made again), and functions, created again only when the ones in place are not exactly these. Each
/// function carries the schema version and the digest of the text that created it as its comment
/// (`dcb <part> v<version> <digest>`): a function made by any other text (an older build, or one
/// of the same version with other text) has another comment or none, and one made by a newer
/// build a higher version, which this build refuses to replace. Dropping and creating the
/// functions on every open would disturb the appends that other processes run at that moment.
pub(crate) struct Migration {
    part: &'static str,
    /// The schema, as written and quoted.
    schema: String,
    quoted: String,
    /// The functions `functions` creates.
    function_names: Vec<String>,
    /// The tables and indexes `tables` creates, qualified.
    relations: Vec<String>,
    tables: String,
    functions: String,
}

impl Migration {
    /// Runs the migration in one transaction, under a database-wide lock so that processes
    /// opening at once take turns. On failure the transaction is rolled back, leaving `client`
    /// usable; driver errors are described as met while `doing` it.
    pub(crate) async fn run(
        &self,
        client: &tokio_postgres::Client,
        connector: &Connector,
        doing: &str,
    ) -> Result<()> {
        let result = self.run_in_transaction(client, connector, doing).await;
        if result.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }

    async fn run_in_transaction(
        &self,
        client: &tokio_postgres::Client,
        connector: &Connector,
        doing: &str,
    ) -> Result<()> {
        let driver = |e| connector.error(doing, e);
        let comment =
            format!("dcb {} v{SCHEMA_VERSION} {:016x}", self.part, fnv1a(self.part, &self.functions));
        client
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .await
            .map_err(driver)?;
        // `CREATE ... IF NOT EXISTS` of an index that exists still takes a lock on its table until
        // the commit, which would make every open wait for the appends in flight and hold up new
        // ones; `to_regclass` only looks the names up.
        let names: Vec<&str> = self.function_names.iter().map(String::as_str).collect();
        let row = client
            .query_one(
                "SELECT ARRAY(SELECT coalesce(obj_description(p.oid, 'pg_proc'), '') FROM pg_proc p \
                 JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = ANY($2)), \
                 (SELECT count(*) FROM unnest($3::text[]) AS r(name) WHERE to_regclass(r.name) IS NULL)",
                &[&self.schema, &names, &self.relations],
            )
            .await
            .map_err(driver)?;
        let comments: Vec<String> = row.try_get(0).map_err(driver)?;
        let missing: i64 = row.try_get(1).map_err(driver)?;
        let found = comments.iter().map(|c| function_version(self.part, c)).max().unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(Error::Internal(format!(
                "the {} functions in schema {:?} were made by a newer build (schema version {found}); \
                 this build makes version {SCHEMA_VERSION} and does not downgrade a schema: run the \
                 newer build",
                self.part, self.schema
            )));
        }
        let reinstall = comments.len() != names.len() || comments.iter().any(|c| *c != comment);
        // With the functions too: a later version may add to the tables what `relations` does
        // not list.
        if missing > 0 || reinstall {
            client.batch_execute(&self.tables).await.map_err(driver)?;
        }
        if reinstall {
            // Functions have no overloads here (the text drops them), so the name is enough.
            let comments: String = names
                .iter()
                .map(|name| format!("COMMENT ON FUNCTION {}.{name} IS '{comment}';", self.quoted))
                .collect();
            client.batch_execute(&format!("{} {comments}", self.functions)).await.map_err(driver)?;
        }
        client.batch_execute("COMMIT").await.map_err(driver)
    }
}

/// The schema version a function's comment records: `dcb <part> v<version> <digest>`; 0 for
/// anything else (no comment, or one of a build before versions were recorded).
fn function_version(part: &str, comment: &str) -> u32 {
    comment
        .strip_prefix("dcb ")
        .and_then(|rest| rest.strip_prefix(part))
        .and_then(|rest| rest.strip_prefix(" v"))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|version| version.parse().ok())
        .unwrap_or(0)
}

/// FNV-1a over a purpose and a text (a schema name for lock keys, the functions' text for their
/// digest): stable across processes and releases, unlike `hashtext`, which PostgreSQL does not
/// promise to keep.
fn fnv1a(purpose: &str, text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in purpose.bytes().chain([0]).chain(text.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Tables and indexes of the event store (its functions are in [`STORE_FUNCTIONS`]).
///
/// - `events`: one row per event, keyed by its position. Tags are kept as an array in their
///   given order (they must round-trip unchanged); metadata as two parallel arrays.
/// - `event_tags`: the tag index, one row per (tag, position), a plain B-tree.
/// - `events_type_position`: the type index.
/// - `tracking`: the last position recorded per source.
///
/// The functions: `first_matches`, positions of the first events matching a condition after a
/// position; `append_batch`, the whole of group commit, one call per batch.
const STORE_TABLES: &str = r#"
CREATE SCHEMA IF NOT EXISTS @S;
CREATE TABLE IF NOT EXISTS @S.events (
    position bigint PRIMARY KEY,
    type text NOT NULL,
    data bytea NOT NULL,
    tags text[] NOT NULL,
    uuid uuid,
    meta_keys text[],
    meta_values text[]
);
CREATE INDEX IF NOT EXISTS events_type_position ON @S.events (type, position);
CREATE TABLE IF NOT EXISTS @S.event_tags (
    tag text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (tag, position)
);
CREATE TABLE IF NOT EXISTS @S.tracking (
    source text PRIMARY KEY,
    position bigint NOT NULL
);
-- Statistics kept fresh as the store grows: after the default 10% of changes, a fast-growing
-- store's plans rest on counts that can be many times too small, and a type+tag condition then
-- starts from the wrong index.
ALTER TABLE @S.events SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE @S.event_tags SET (autovacuum_analyze_scale_factor = 0.02);
"#;

/// The functions of the event store (see [`STORE_TABLES`]).
const STORE_FUNCTIONS: &str = r#"
-- When the functions change they are dropped and created again, under the migration lock, so
-- that a changed signature never leaves an old overload behind to make calls ambiguous.
DO $drop$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = '@S'::regnamespace
               AND (p.proname IN ('append_batch', 'first_matches')
                    OR p.proname LIKE 'store\_protocol\_v%') LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END
$drop$;

-- Named for the schema version: statements that write without calling `append_batch` (the
-- lone append's) call it too, so that once a build of another version has replaced the
-- functions, they fail as calls of `append_batch` do, instead of writing by rules that are no
-- longer the schema's. Inlined when planned: it costs nothing per call.
CREATE FUNCTION @S.store_protocol_v@V() RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';

-- The first `p_limit` positions matching items `p_from + 1 ..= p_to` of the flattened query
-- arrays, each after its own position `i_after` (no items: every event after `p_after`). Each
-- item is answered from an index in position order and cut at `p_limit`, so the cost does not
-- grow with the store.
CREATE OR REPLACE FUNCTION @S.first_matches(
    p_after bigint, p_limit int, p_from int, p_to int,
    i_type_off int[], i_types int[], i_tag_off int[], i_tags int[], i_after bigint[],
    q_types text[], q_tags text[]
) RETURNS bigint[] LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    found bigint[] := '{}';
    item_types text[];
    item_tags text[];
    one_type text;
BEGIN
    IF p_to <= p_from THEN
        RETURN ARRAY(SELECT e.position FROM @S.events e WHERE e.position > p_after
                     ORDER BY e.position LIMIT p_limit);
    END IF;
    FOR i IN p_from + 1 .. p_to LOOP
        item_types := q_types[i_type_off[i] + 1 : i_type_off[i] + i_types[i]];
        item_tags := q_tags[i_tag_off[i] + 1 : i_tag_off[i] + i_tags[i]];
        IF i_tags[i] = 0 AND i_types[i] = 0 THEN
            found := found || ARRAY(SELECT e.position FROM @S.events e WHERE e.position > i_after[i]
                                    ORDER BY e.position LIMIT p_limit);
        ELSIF i_tags[i] = 0 THEN
            FOREACH one_type IN ARRAY item_types LOOP
                found := found || ARRAY(SELECT e.position FROM @S.events e
                                        WHERE e.type = one_type AND e.position > i_after[i]
                                        ORDER BY e.position LIMIT p_limit);
            END LOOP;
        ELSIF i_tags[i] = 1 AND i_types[i] = 0 THEN
            found := found || ARRAY(SELECT x.position FROM @S.event_tags x
                                    WHERE x.tag = item_tags[1] AND x.position > i_after[i]
                                    ORDER BY x.position LIMIT p_limit);
        ELSE
            found := found || ARRAY(SELECT x.position FROM @S.event_tags x
                                    JOIN @S.events e ON e.position = x.position
                                    WHERE x.tag = item_tags[1] AND x.position > i_after[i]
                                      AND e.tags @> item_tags
                                      AND (i_types[i] = 0 OR e.type = ANY (item_types))
                                    ORDER BY x.position LIMIT p_limit);
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT p FROM unnest(found) AS p ORDER BY p LIMIT p_limit);
END
$fn$;

-- Applies a batch of appends in order, in the caller's transaction, and returns per append the
-- position of its last event, -1 when its condition failed or -2 when its tracking position did
-- not advance. The advisory lock serialises every append of the schema until commit, so
-- positions are gapless and become visible in order. The function is VOLATILE so that each
-- statement after the lock sees what committed while it waited.
--
-- Accepted appends are inserted together, by one statement, when the batch ends, or earlier when
-- a later append's condition might match them (`a_flush`, worked out by the caller from the
-- types and tags of the batch): then that condition is checked against the table holding them.
-- A condition's items are checked each after its own position (`i_after`: the later of the
-- condition's `after` and the item's); `a_after` is the latest of them (the condition's `after`
-- when it has no items), which a retry's events must lie beyond.
-- Events are addressed by their append (`e_app`) and rank in it (`e_k`); each event's tags and
-- metadata keys and values come as the text of an array (`e_tags`, `e_meta_keys`,
-- `e_meta_values`), so that the insert reads every array once, in order, and joins nothing:
-- indexing into arrays of text or bytea walks them from the start for every element, and joining
-- events to tags passed apart was planned as a nested loop, quadratic in the batch's events.
CREATE OR REPLACE FUNCTION @S.append_batch(
    a_events int[], a_conditional bool[], a_after bigint[], a_item_off int[], a_items int[],
    a_flush bool[], a_retry int[], a_source text[], a_source_pos bigint[],
    i_type_off int[], i_types int[], i_tag_off int[], i_tags int[], i_after bigint[],
    q_types text[], q_tags text[], e_app int[], e_k int[], e_type text[], e_data bytea[], e_uuid uuid[],
    e_tags text[], e_meta_keys text[], e_meta_values text[]
) RETURNS bigint[] LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n int := coalesce(array_length(a_events, 1), 0);
    head bigint;
    results bigint[] := '{}';
    ev int := 0;
    cnt int;
    outcome bigint;
    recorded bigint;
    conflict boolean;
    matches bigint[];
    first bigint;
    -- The position before each accepted append's first event (null: not accepted).
    a_base bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    -- Accepted appends not inserted yet are among appends p_lo ..= p_hi.
    p_lo int;
    p_hi int;
    written boolean := false;
    -- The bare-tag items, of appends whose conditions no earlier append of the batch can meet
    -- (`a_flush` false), that have an event after their append's position.
    hit_items int[];
BEGIN
    PERFORM pg_advisory_xact_lock(@LOCK);
    SELECT coalesce(max(position), 0) INTO head FROM @S.events;
    -- Those items are answered by the table as it is now, whatever the batch inserts before
    -- them, so one statement checks them all: a statement per item costs about three times as
    -- much in a batch (PL/pgSQL starts an executor for each).
    hit_items := ARRAY(
        SELECT it
        FROM unnest(a_item_off, a_items, a_conditional, a_flush) AS ap(off, cnt, cond, fl),
             generate_series(ap.off + 1, ap.off + ap.cnt) AS it
        WHERE ap.cond AND NOT ap.fl AND i_tags[it] = 1 AND i_types[it] = 0
          AND (SELECT x.position FROM @S.event_tags x
               WHERE x.tag = q_tags[i_tag_off[it] + 1] AND x.position > i_after[it]
               ORDER BY x.position LIMIT 1) IS NOT NULL);
    FOR a IN 1 .. n LOOP
        cnt := a_events[a];
        outcome := NULL;
        IF a_conditional[a] THEN
            IF a_flush[a] AND p_lo IS NOT NULL THEN
@FLUSH
                p_lo := NULL;
            END IF;
            -- Item by item, inline (a call of `first_matches` costs several times as much), each
            -- answered by its first match from an index in position order. A scalar subquery,
            -- not EXISTS: PostgreSQL drops the ORDER BY and LIMIT of an EXISTS, and its generic
            -- plan, expecting an early hit, then scans the table from the start.
            -- An `IF`, not `a_items[a] = 0 AND (SELECT ...)`: the expression starts an executor
            -- for its subquery even when the first operand settles it.
            conflict := false;
            IF a_items[a] = 0 THEN
                conflict := (SELECT e.position FROM @S.events e WHERE e.position > a_after[a]
                             ORDER BY e.position LIMIT 1) IS NOT NULL;
            END IF;
            FOR it IN a_item_off[a] + 1 .. a_item_off[a] + a_items[a] LOOP
                EXIT WHEN conflict;
                IF i_tags[it] = 1 AND i_types[it] = 0 AND NOT a_flush[a] THEN
                    conflict := it = ANY (hit_items);
                ELSIF i_tags[it] = 1 AND i_types[it] = 0 THEN
                    conflict := (SELECT x.position FROM @S.event_tags x
                                 WHERE x.tag = q_tags[i_tag_off[it] + 1] AND x.position > i_after[it]
                                 ORDER BY x.position LIMIT 1) IS NOT NULL;
                ELSIF i_tags[it] = 0 AND i_types[it] = 0 THEN
                    conflict := (SELECT e.position FROM @S.events e WHERE e.position > i_after[it]
                                 ORDER BY e.position LIMIT 1) IS NOT NULL;
                ELSIF i_tags[it] = 0 THEN
                    FOR k IN i_type_off[it] + 1 .. i_type_off[it] + i_types[it] LOOP
                        conflict := (SELECT e.position FROM @S.events e
                                     WHERE e.type = q_types[k] AND e.position > i_after[it]
                                     ORDER BY e.position LIMIT 1) IS NOT NULL;
                        EXIT WHEN conflict;
                    END LOOP;
                ELSE
                    -- The bare first tag first, in a statement of its own: no event of it after
                    -- the position (the usual answer) settles the item. Joined with the events,
                    -- the statement's generic plan is priced so high that PostgreSQL plans it
                    -- afresh at every call, about ten times the cost of the probe.
                    conflict := (SELECT x.position FROM @S.event_tags x
                                 WHERE x.tag = q_tags[i_tag_off[it] + 1] AND x.position > i_after[it]
                                 ORDER BY x.position LIMIT 1) IS NOT NULL;
                    CONTINUE WHEN NOT conflict;
                    conflict := (
                        SELECT x.position FROM @S.event_tags x JOIN @S.events e ON e.position = x.position
                        WHERE x.tag = q_tags[i_tag_off[it] + 1] AND x.position > i_after[it]
                          AND (i_tags[it] = 1
                               OR e.tags @> q_tags[i_tag_off[it] + 1 : i_tag_off[it] + i_tags[it]])
                          AND (i_types[it] = 0
                               OR e.type = ANY (q_types[i_type_off[it] + 1 : i_type_off[it] + i_types[it]]))
                        ORDER BY x.position LIMIT 1) IS NOT NULL;
                END IF;
            END LOOP;
            IF conflict THEN
                outcome := -1;
                -- A retry of an append that already succeeded: the first match is the event of
                -- rank `a_retry` in it, and the events around it carry the submitted uuids.
                IF a_retry[a] >= 0 THEN
                    matches := @S.first_matches(a_after[a], 1, a_item_off[a],
                                                a_item_off[a] + a_items[a], i_type_off, i_types,
                                                i_tag_off, i_tags, i_after, q_types, q_tags);
                    first := matches[1] - a_retry[a];
                    IF first > a_after[a] AND e_uuid[ev + 1 : ev + cnt] = ARRAY(
                        SELECT e.uuid FROM @S.events e
                        WHERE e.position BETWEEN first AND first + cnt - 1 ORDER BY e.position
                    ) THEN
                        outcome := first + cnt - 1;
                    END IF;
                END IF;
            END IF;
        END IF;
        -- Tracking after the condition: a recognised retry answers with its position even though
        -- its own tracking position is recorded by now.
        IF outcome IS NULL AND a_source[a] IS NOT NULL THEN
            SELECT t.position INTO recorded FROM @S.tracking t WHERE t.source = a_source[a];
            IF FOUND AND recorded >= a_source_pos[a] THEN
                outcome := -2;
            END IF;
        END IF;
        IF outcome IS NULL THEN
            a_base[a] := head;
            p_lo := coalesce(p_lo, a);
            p_hi := a;
            IF a_source[a] IS NOT NULL THEN
                INSERT INTO @S.tracking (source, position) VALUES (a_source[a], a_source_pos[a])
                ON CONFLICT (source) DO UPDATE SET position = EXCLUDED.position;
            END IF;
            head := head + cnt;
            outcome := head;
            written := true;
        END IF;
        results := results || outcome;
        ev := ev + cnt;
    END LOOP;
    IF p_lo IS NOT NULL AND n = 1 AND a_events[1] = 1 THEN
        -- One append of one event, the lone client's case: all the arrays are its own, so a
        -- plain insert does, at a fraction of the general statement's cost.
        WITH inserted AS (
            INSERT INTO @S.events (position, type, data, tags, uuid, meta_keys, meta_values)
            VALUES (a_base[1] + 1, e_type[1], e_data[1], e_tags[1]::text[], e_uuid[1],
                    e_meta_keys[1]::text[], e_meta_values[1]::text[])
            RETURNING position, tags
        )
        INSERT INTO @S.event_tags (tag, position)
        SELECT DISTINCT t.tag, i.position FROM inserted i, unnest(i.tags) AS t(tag);
    ELSIF p_lo IS NOT NULL THEN
@FLUSH
    END IF;
    IF written THEN
        PERFORM pg_notify('@CHANNEL', head::text);
    END IF;
    RETURN results;
END
$fn$;
"#;

/// Inserts the accepted appends among `p_lo ..= p_hi` and their tag index rows, in one
/// statement whose cost grows with the batch's events and no faster, whatever plan PostgreSQL
/// keeps for it: one pass over the events' arrays, and each inserted event's own tags.
const FLUSH: &str = r#"
                WITH inserted AS (
                    INSERT INTO @S.events (position, type, data, tags, uuid, meta_keys, meta_values)
                    SELECT a_base[u.app] + u.k, u.t, u.d, u.tags::text[], u.id, u.keys::text[],
                           u.vals::text[]
                    FROM unnest(e_app, e_k, e_type, e_data, e_uuid, e_tags, e_meta_keys, e_meta_values)
                         AS u(app, k, t, d, id, tags, keys, vals)
                    WHERE u.app BETWEEN p_lo AND p_hi AND a_base[u.app] IS NOT NULL
                    RETURNING position, tags
                )
                INSERT INTO @S.event_tags (tag, position)
                SELECT DISTINCT t.tag, i.position FROM inserted i, unnest(i.tags) AS t(tag);"#;

/// Tables and functions of the aggregate recorder: a table keyed by (aggregate id, version),
/// whose primary key is the whole concurrency rule, and a gapless notification id per event.
const RECORDER_TABLES: &str = r#"
CREATE SCHEMA IF NOT EXISTS @S;
CREATE TABLE IF NOT EXISTS @S.aggregate_events (
    aggregate_id text NOT NULL,
    version bigint NOT NULL,
    notification_id bigint NOT NULL UNIQUE,
    type text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);
"#;

/// The function of the aggregate recorder (see [`RECORDER_TABLES`]).
const RECORDER_FUNCTIONS: &str = r#"
-- Inserts the queued inserts of one group commit, each in its own subtransaction, so that an
-- insert repeating a recorded version (a unique violation) fails alone and writes nothing, while
-- the others commit together. `p_counts` gives each insert's number of events, in array order.
-- Returns per insert the notification id of its last event, or -1 when it failed. The lock keeps
-- notification ids gapless and in commit order.
DROP FUNCTION IF EXISTS @S.insert_aggregate_events(text[], bigint[], text[], bytea[]);
DO $drop$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = '@S'::regnamespace AND p.proname LIKE 'recorder\_protocol\_v%' LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END
$drop$;
-- The recorder's version, called by the plain insert as `store_protocol_v@V` is by the lone
-- append (see the store's functions).
CREATE FUNCTION @S.recorder_protocol_v@V() RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OR REPLACE FUNCTION @S.insert_aggregate_batch(
    p_counts int[], p_ids text[], p_versions bigint[], p_types text[], p_data bytea[]
) RETURNS bigint[] LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    last bigint;
    results bigint[] := '{}';
    lo int := 1;
    hi int;
BEGIN
    PERFORM pg_advisory_xact_lock(@RLOCK);
    SELECT coalesce(max(notification_id), 0) INTO last FROM @S.aggregate_events;
    FOR i IN 1 .. coalesce(cardinality(p_counts), 0) LOOP
        hi := lo + p_counts[i] - 1;
        BEGIN
            INSERT INTO @S.aggregate_events (aggregate_id, version, notification_id, type, data)
            SELECT p_ids[g], p_versions[g], last + g - lo + 1, p_types[g], p_data[g]
            FROM generate_series(lo, hi) AS g;
            last := last + p_counts[i];
            results := results || last;
        EXCEPTION WHEN unique_violation THEN
            results := results || (-1)::bigint;
        END;
        lo := hi + 1;
    END LOOP;
    RETURN results;
END
$fn$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_not_escaped() {
        assert!(Schema::new("dcb_store_1").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", "a b", &"x".repeat(49)] {
            let error = Schema::new(bad).unwrap_err();
            assert!(matches!(error, Error::InvalidArgument(_)), "{bad:?}");
        }
    }

    /// The digest of each part's tables and functions (templates) when [`SCHEMA_VERSION`] was
    /// last considered.
    const CONSIDERED: [(&str, u32, u64); 2] =
        [("store", 3, 0x1a496f1137739e59), ("recorder", 3, 0x12f8f2894fcbeea6)];

    /// Fails whenever the SQL changes, so that every change is a decision about the version:
    /// the tables and functions, and the statements that write without calling a function (the
    /// lone append's, the recorder's plain insert).
    #[test]
    fn every_change_of_the_sql_is_weighed_against_the_schema_version() {
        let schema = Schema::new("s").unwrap();
        let lone = crate::writer::LoneAppend::new(&schema).all_statements()
            + crate::writer::PlainBatch::new(&schema).statement();
        let plain = crate::recorder::PLAIN_INSERT;
        let parts = [
            ("store", format!("{STORE_TABLES}{STORE_FUNCTIONS}{FLUSH}{lone}")),
            ("recorder", format!("{RECORDER_TABLES}{RECORDER_FUNCTIONS}{plain}")),
        ];
        for ((part, sql), (considered, version, digest)) in parts.iter().zip(CONSIDERED) {
            assert_eq!(*part, considered);
            assert!(
                fnv1a(part, sql) as u64 == digest && version == SCHEMA_VERSION,
                "the {part} SQL changed (digest {:#x}): if a build of schema version {SCHEMA_VERSION} \
                 could not work with the new tables or functions (other arguments, results or \
                 columns), raise SCHEMA_VERSION; either way record the digest and version in \
                 CONSIDERED",
                fnv1a(part, sql) as u64
            );
        }
    }

    #[test]
    fn lock_keys_differ_per_schema_and_purpose() {
        let a = Schema::new("a").unwrap();
        let b = Schema::new("b").unwrap();
        assert_ne!(a.append_lock(), b.append_lock());
        assert_ne!(a.append_lock(), a.recorder_lock());
        assert_eq!(a.append_lock(), Schema::new("a").unwrap().append_lock());
    }
}
