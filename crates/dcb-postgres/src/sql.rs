//! The SQL text of reads, built per query shape.
//!
//! A statement's text depends only on the shape of its query (how many items, types and tags),
//! never on values, which travel as parameters; so statements are prepared once per shape and
//! connection.

use dcb::Query;

use crate::schema::Schema;

/// A query parameter beyond the fixed ones of a statement.
pub(crate) enum Term {
    One(String),
    Many(Vec<String>),
}

/// A statement selecting the positions matching `query` after `$1` and before `$2`, ordered and
/// cut at `$3`.
///
/// Each item (or each type of a types-only item) is looked up in position order in its index
/// and cut at the limit, then the union is ordered and cut again, so the cost follows the
/// number of matches read, not the size of the store. An item's other tags and types are
/// checked on the candidates its first tag yields, or its tags on those of its types, whichever
/// the planner's statistics say is fewer. Further parameters are pushed on `terms`,
/// numbered after the statement's `fixed` ones.
pub(crate) fn candidates(
    schema: &Schema,
    query: &Query,
    backwards: bool,
    fixed: usize,
    terms: &mut Vec<Term>,
) -> String {
    let s = &schema.quoted;
    let dir = if backwards { "DESC" } else { "ASC" };
    let param = |terms: &mut Vec<Term>, term: Term| {
        terms.push(term);
        format!("${}", terms.len() + fixed)
    };
    let mut branches = Vec::new();
    if query.matches_all() {
        branches.push(format!(
            "SELECT position FROM {s}.events WHERE position > $1 AND position < $2 \
             ORDER BY position {dir} LIMIT $3"
        ));
    } else {
        for item in &query.items {
            let mut types: Vec<&String> = item.types.iter().collect();
            types.sort();
            types.dedup();
            let mut distinct_tags: Vec<&String> = Vec::new();
            for tag in &item.tags {
                if !distinct_tags.contains(&tag) {
                    distinct_tags.push(tag);
                }
            }
            if distinct_tags.is_empty() {
                for ty in types {
                    let p = param(terms, Term::One(ty.clone()));
                    branches.push(format!(
                        "SELECT position FROM {s}.events WHERE type = {p} AND position > $1 \
                         AND position < $2 ORDER BY position {dir} LIMIT $3"
                    ));
                }
                continue;
            }
            let first = param(terms, Term::One(distinct_tags[0].clone()));
            if distinct_tags.len() == 1 && types.is_empty() {
                branches.push(format!(
                    "SELECT position FROM {s}.event_tags WHERE tag = {first} AND position > $1 \
                     AND position < $2 ORDER BY position {dir} LIMIT $3"
                ));
                continue;
            }
            let mut filter = String::new();
            if distinct_tags.len() > 1 {
                let all = param(terms, Term::Many(distinct_tags.iter().map(|t| (*t).clone()).collect()));
                filter.push_str(&format!(" AND e.tags @> {all}::text[]"));
            }
            if !types.is_empty() {
                let any = param(terms, Term::Many(types.iter().map(|t| (*t).clone()).collect()));
                filter.push_str(&format!(" AND e.type = ANY ({any}::text[])"));
            }
            branches.push(format!(
                "SELECT x.position FROM {s}.event_tags x JOIN {s}.events e \
                 ON e.position = x.position WHERE x.tag = {first} AND x.position > $1 \
                 AND x.position < $2{filter} ORDER BY x.position {dir} LIMIT $3"
            ));
        }
    }
    match branches.len() {
        // Items that can match nothing (no types and no tags never reach here) leave no branch.
        0 => "SELECT NULL::bigint AS position WHERE false".to_owned(),
        1 => branches.remove(0),
        _ => format!(
            "SELECT position FROM ({}) u ORDER BY position {dir} LIMIT $3",
            branches.iter().map(|b| format!("({b})")).collect::<Vec<_>>().join(" UNION ")
        ),
    }
}

/// One SQL statement answering `query` with `$1` as `after`, `$2` as `before` and `$3` as the
/// limit (null for none), and with `budgeted`, `$4` as a byte budget: the candidates, the events
/// joined in, and the store head from the same snapshot in every row (and in the single all-null
/// row when nothing matched).
///
/// A budgeted read sends only the events before the one that reaches the budget (the first one
/// always), each weighed as [`dcb::Event::byte_size`] weighs it, so that the rows past it are
/// neither sent nor read from their TOAST tables (`octet_length` reads a stored value's size from
/// its header).
///
/// The text depends only on the query's shape (how many items, types and tags) and on
/// `budgeted`, so prepared statements are reused across queries of the same shape.
pub(crate) fn read_sql(
    schema: &Schema,
    query: &Query,
    backwards: bool,
    budgeted: bool,
) -> (String, Vec<Term>) {
    let s = &schema.quoted;
    let dir = if backwards { "DESC" } else { "ASC" };
    let mut terms = Vec::new();
    let fixed = if budgeted { 4 } else { 3 };
    let candidates = candidates(schema, query, backwards, fixed, &mut terms);
    let matched = if budgeted {
        const SIZE: &str = "octet_length(e.type) + octet_length(e.data) \
             + coalesce(octet_length(array_to_string(e.tags, '')), 0) \
             + coalesce(octet_length(array_to_string(e.meta_keys, '')), 0) \
             + coalesce(octet_length(array_to_string(e.meta_values, '')), 0)";
        format!(
            "(SELECT * FROM (SELECT e.*, sum({SIZE}) OVER (ORDER BY e.position {dir} \
             ROWS UNBOUNDED PRECEDING) - ({SIZE}) AS taken \
             FROM c JOIN {s}.events e ON e.position = c.position) w WHERE w.taken = 0 OR w.taken < $4) e"
        )
    } else {
        format!("(c JOIN {s}.events e ON e.position = c.position)")
    };
    let sql = format!(
        "WITH c AS ({candidates}) \
         SELECT h.head, e.position, e.type, e.data, e.tags, e.uuid, e.meta_keys, e.meta_values \
         FROM (SELECT max(position) AS head FROM {s}.events) h \
         LEFT JOIN {matched} ON true \
         ORDER BY e.position {dir}"
    );
    (sql, terms)
}
