#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Reading the scope CSVs admins upload (`users.csv`, `groups.csv`): what is accepted, what is
//! rejected row by row, and which files are refused whole with a message saying what to fix.

use filetrail_core::scope::csv::*;
use filetrail_core::scope::{GroupSelector, MAX_SCOPE_ENTRIES, RejectedRow, ScopeEntry, ScopeKind, UserSelector};

fn users(csv: &str) -> ParsedList {
    parse_scope_csv(ListKind::Users, csv.as_bytes()).unwrap()
}

fn groups(csv: &str) -> ParsedList {
    parse_scope_csv(ListKind::Groups, csv.as_bytes()).unwrap()
}

fn users_error(bytes: &[u8]) -> CsvError {
    parse_scope_csv(ListKind::Users, bytes).unwrap_err()
}

fn email(v: &str) -> ScopeEntry {
    ScopeEntry::User(UserSelector::Email(v.into()))
}

fn user_named(v: &str) -> ScopeEntry {
    ScopeEntry::User(UserSelector::DisplayName(v.into()))
}

fn group_named(v: &str) -> ScopeEntry {
    ScopeEntry::Group(GroupSelector::DisplayName(v.into()))
}

fn group_mail(v: &str) -> ScopeEntry {
    ScopeEntry::Group(GroupSelector::Mail(v.into()))
}

/// `(line, value)` of each rejected row, for compact assertions.
fn rejected_at(list: &[RejectedRow]) -> Vec<(u64, &str)> {
    list.iter().map(|r| (r.line, r.value.as_str())).collect()
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message should mention {part:?}: {message}");
    }
}

// ---- headers ----------------------------------------------------------------------------------

#[test]
fn every_users_address_header_reads_the_user_by_address() {
    for header in USER_EMAIL_HEADERS {
        let list = users(&format!("{header}\nalice@contoso.com\n"));
        assert_eq!(list.entries, [email("alice@contoso.com")], "header {header}");
    }
}

#[test]
fn every_users_name_header_reads_the_user_by_display_name() {
    for header in USER_NAME_HEADERS {
        let list = users(&format!("{header}\nAlice Martin\n"));
        assert_eq!(list.entries, [user_named("Alice Martin")], "header {header}");
    }
}

#[test]
fn users_address_columns_are_read_in_the_documented_priority() {
    // GIVEN every address column, listed in reverse order of priority, each with its own value
    let header: Vec<&str> = USER_EMAIL_HEADERS.iter().rev().copied().collect();
    for preferred in 0..USER_EMAIL_HEADERS.len() {
        let present = &header[..header.len() - preferred];
        let row: Vec<String> = present
            .iter()
            .map(|h| format!("{}@contoso.com", h.replace(' ', "")))
            .collect();
        // WHEN the list is read
        let list = users(&format!("{}\n{}\n", present.join(","), row.join(",")));
        // THEN the value comes from the highest-priority column present
        let expected = format!("{}@contoso.com", USER_EMAIL_HEADERS[preferred].replace(' ', ""));
        assert_eq!(list.entries, [email(&expected)], "columns {present:?}");
    }
}

#[test]
fn users_address_wins_over_display_name_and_display_name_over_owner() {
    let list = users("Owner,DisplayName,Email\nOwner A,Display A,a@contoso.com\nOwner B,Display B,\nOwner C,,\n");
    assert_eq!(
        list.entries,
        [email("a@contoso.com"), user_named("Display B"), user_named("Owner C")]
    );
}

#[test]
fn users_row_with_empty_address_cell_uses_the_next_address_column_before_the_name() {
    let list = users("Email,UserPrincipalName,DisplayName\n,bob@contoso.com,Bob\n,,Carol Jones\n");
    assert_eq!(list.entries, [email("bob@contoso.com"), user_named("Carol Jones")]);
}

#[test]
fn users_row_with_invalid_address_is_rejected_rather_than_matched_by_name() {
    let list = users("Email,DisplayName\nalice@contoso.com,Alice\nbob(at)contoso.com,Bob\n");
    assert_eq!(list.entries, [email("alice@contoso.com")]);
    assert_eq!(rejected_at(&list.rejected), [(3, "bob(at)contoso.com")]);
}

#[test]
fn every_groups_header_reads_the_group_by_name_or_mail() {
    for header in GROUP_NAME_HEADERS {
        let list = groups(&format!("{header}\nSales Team\n"));
        assert_eq!(list.entries, [group_named("Sales Team")], "header {header}");
    }
    for header in GROUP_MAIL_HEADERS {
        let list = groups(&format!("{header}\nsales@contoso.com\n"));
        assert_eq!(list.entries, [group_mail("sales@contoso.com")], "header {header}");
    }
}

#[test]
fn groups_valid_mail_wins_over_name_and_name_is_used_without_one() {
    let list = groups(
        "Display Name,Email\n\
         Sales Team,sales@contoso.com\n\
         Security Admins,\n\
         Finance,finance at contoso\n",
    );
    assert_eq!(
        list.entries,
        [
            group_mail("sales@contoso.com"),
            group_named("Security Admins"),
            group_named("Finance")
        ]
    );
    assert!(list.rejected.is_empty());
}

#[test]
fn groups_mail_and_name_columns_follow_their_priority() {
    let list = groups("Groups,Display Name,Email,Email Address\nG,DN,mail@contoso.com,address@contoso.com\nG,DN,,\n");
    assert_eq!(list.entries, [group_mail("address@contoso.com"), group_named("DN")]);
}

#[test]
fn groups_row_with_invalid_mail_and_invalid_name_is_rejected_naming_both() {
    let list = groups("Display Name,Email\nSales,sales@contoso.com\n\"Bad\nName\",nope\n");
    assert_eq!(rejected_at(&list.rejected), [(3, "nope")]);
    assert_mentions(
        &list.rejected[0].reason,
        &["not an email address", "\"Bad\\nName\"", "line break"],
    );
}

#[test]
fn header_names_ignore_case_spaces_underscores_and_dashes() {
    for header in [
        "EMAIL_ADDRESS",
        "emailaddress",
        "  email address  ",
        "E-Mail Address",
        "userprincipalname",
    ] {
        let list = users(&format!("{header}\nalice@contoso.com\n"));
        assert_eq!(list.entries, [email("alice@contoso.com")], "header {header:?}");
    }
    for header in [
        "displayname",
        "DISPLAY_NAME",
        "Display-Name",
        "Display Name",
        " groups ",
    ] {
        let list = groups(&format!("{header}\nSales Team\n"));
        assert_eq!(list.entries, [group_named("Sales Team")], "header {header:?}");
    }
    // "Display Name" is the users DisplayName header too.
    assert_eq!(users("Display Name\nAlice\n").entries, [user_named("Alice")]);
}

#[test]
fn excel_utf8_bom_is_accepted_and_not_part_of_the_header() {
    let list = users("\u{feff}Email Address,Display Name\r\nalice@contoso.com,Alice\r\n");
    assert_eq!(list.entries, [email("alice@contoso.com")]);
    assert_eq!(list.header, ["Email Address", "Display Name"]);
}

#[test]
fn extra_columns_are_ignored_and_the_header_is_reported_as_found() {
    let list = users(
        "Name,Dept,Email Address,Manager,Office\n\
         Alice,Sales,alice@contoso.com,bob@contoso.com,\n\
         Bob,\"IT, Ops\",bob@contoso.com\n",
    );
    assert_eq!(list.entries, [email("alice@contoso.com"), email("bob@contoso.com")]);
    assert_eq!(list.header, ["Name", "Dept", "Email Address", "Manager", "Office"]);
    assert_eq!((list.rows, list.duplicates), (2, 0));
}

#[test]
fn no_usable_header_names_what_was_found_and_the_headers_accepted() {
    let err = users_error(b"Name,Dept\nAlice,Sales\n");
    assert!(
        matches!(&err, CsvError::NoUsableHeader { kind: ListKind::Users, line: 1, found } if found == &["Name", "Dept"])
    );
    assert_mentions(
        &err.to_string(),
        &[
            "found [Name, Dept]",
            "Email Address, Email, OwnerPrincipalName, UserPrincipalName",
            "DisplayName / Owner",
            "add a header row",
        ],
    );
}

#[test]
fn file_without_header_row_is_rejected_quoting_its_first_row() {
    let err = users_error(b"alice@contoso.com\nbob@contoso.com\n");
    assert_mentions(&err.to_string(), &["found [alice@contoso.com]", "add a header row"]);
}

#[test]
fn users_file_uploaded_as_groups_list_is_rejected_naming_the_groups_headers() {
    let err = parse_scope_csv(ListKind::Groups, b"UserPrincipalName\nalice@contoso.com\n").unwrap_err();
    assert_mentions(
        &err.to_string(),
        &[
            "found [UserPrincipalName]",
            "a groups list needs",
            "Display Name, Groups",
            "Email Address, Email",
        ],
    );
}

#[test]
fn semicolon_separated_file_is_rejected_with_a_hint_about_the_separator() {
    let err = users_error(b"Email Address;Display Name\nalice@contoso.com;Alice\n");
    assert_mentions(
        &err.to_string(),
        &["no usable header", "';'", "CSV UTF-8 (Comma delimited)"],
    );
}

// ---- rows -------------------------------------------------------------------------------------

#[test]
fn cell_values_are_trimmed() {
    let list = users("Email,DisplayName\n  alice@contoso.com  ,\n,  Carol Jones \t\n");
    assert_eq!(list.entries, [email("alice@contoso.com"), user_named("Carol Jones")]);
}

#[test]
fn quoted_cells_keep_commas_quotes_and_line_breaks_and_later_line_numbers_stay_right() {
    let csv = "Email,DisplayName,Notes\n\
               alice@contoso.com,\"Smith, Anna\",\"a, b\"\n\
               ,\"Line\nBreak\",\n\
               bob@contoso.com,Bob,\"multi\nline\nnote\"\n\
               ,\"O'Brien \"\"Jr\"\", Pat\",\n\
               not-an-address,X,\n";
    let list = users(csv);
    assert_eq!(
        list.entries,
        [
            email("alice@contoso.com"),
            email("bob@contoso.com"),
            user_named("O'Brien \"Jr\", Pat")
        ]
    );
    // The multi-line name starts on line 3; the bad address sits on line 9 of the file.
    assert_eq!(rejected_at(&list.rejected), [(3, "Line\nBreak"), (9, "not-an-address")]);
    assert_mentions(&list.rejected[0].reason, &["line break", "one line"]);
}

#[test]
fn line_numbers_are_right_with_crlf_line_endings_and_quoted_line_breaks() {
    let list = users("Email,Notes\r\nalice@contoso.com,\"one\r\ntwo\"\r\n\r\nbad\r\n");
    assert_eq!(list.entries, [email("alice@contoso.com")]);
    assert_eq!(rejected_at(&list.rejected), [(5, "bad")]);
}

#[test]
fn formula_like_cells_are_stored_verbatim_as_plain_text_names() {
    let formulas = [
        "=cmd|' /C calc'!A0",
        "+SUM(1,2)",
        "-2+3",
        "@SUM(A1)",
        "=HYPERLINK(\"http://x\",\"y\")",
    ];
    let csv: String = std::iter::once("DisplayName".to_owned())
        .chain(formulas.iter().map(|f| format!("\"{}\"", f.replace('"', "\"\""))))
        .collect::<Vec<_>>()
        .join("\n");
    let list = users(&csv);
    let expected: Vec<ScopeEntry> = formulas.iter().map(|f| user_named(f)).collect();
    assert_eq!(list.entries, expected);
    let list = groups(&csv.replacen("DisplayName", "Display Name", 1));
    assert_eq!(list.entries.iter().map(ScopeEntry::value).collect::<Vec<_>>(), formulas);
}

#[test]
fn formula_like_cells_in_an_address_column_are_rejected_verbatim() {
    let list = users(
        "Email\n\
         alice@contoso.com\n\
         =cmd|' /C calc'!A0\n\
         \"+SUM(1,2)\"\n\
         -2+3\n\
         @SUM(A1)\n\
         \"=HYPERLINK(\"\"x@y.com\"\")\"\n",
    );
    assert_eq!(list.entries, [email("alice@contoso.com")]);
    assert_eq!(
        rejected_at(&list.rejected),
        [
            (3, "=cmd|' /C calc'!A0"),
            (4, "+SUM(1,2)"),
            (5, "-2+3"),
            (6, "@SUM(A1)"),
            (7, "=HYPERLINK(\"x@y.com\")")
        ]
    );
    assert!(
        list.rejected
            .iter()
            .all(|r| r.reason.starts_with("not an email address"))
    );
}

#[test]
fn duplicate_rows_are_counted_once_keeping_the_first_spelling() {
    let list = users(
        "Email,DisplayName\n\
         Alice@Contoso.com,\n\
         alice@contoso.com,\n\
         \x20ALICE@CONTOSO.COM ,\n\
         ,Carol Jones\n\
         ,carol jones  \n\
         ,Carol  Jones\n",
    );
    assert_eq!(
        list.entries,
        [
            email("Alice@Contoso.com"),
            user_named("Carol Jones"),
            user_named("Carol  Jones")
        ]
    );
    assert_eq!(list.duplicates, 3);
    assert_eq!(list.rows, 6);
}

#[test]
fn group_mail_and_group_name_with_the_same_text_are_different_entries() {
    let list = groups("Display Name,Email\nsales@contoso.com,\n,sales@contoso.com\n,SALES@contoso.com\n");
    assert_eq!(
        list.entries,
        [group_named("sales@contoso.com"), group_mail("sales@contoso.com")]
    );
    assert_eq!(list.duplicates, 1);
}

#[test]
fn blank_lines_and_rows_with_empty_relevant_cells_are_skipped() {
    let list = users("\n\nEmail,Dept\n\nalice@contoso.com,Sales\n,\n   ,IT\n\r\n\nbob\n");
    assert_eq!(list.entries, [email("alice@contoso.com")]);
    assert_eq!(rejected_at(&list.rejected), [(10, "bob")]);
    assert_eq!(list.rows, 2, "skipped rows are not counted");
}

#[test]
fn rejected_rows_carry_line_value_and_reason_while_the_rest_is_accepted() {
    let long_name = "N".repeat(MAX_DISPLAY_NAME_CHARS + 1);
    let csv = format!(
        "Email,DisplayName\n\
         alice@contoso.com,\n\
         bob@contoso,\n\
         \" carol @contoso.com\",\n\
         dave@@contoso.com,\n\
         ,{long_name}\n\
         erin@contoso.com,\n"
    );
    let list = users(&csv);
    assert_eq!(list.entries, [email("alice@contoso.com"), email("erin@contoso.com")]);
    assert_eq!(
        rejected_at(&list.rejected),
        [
            (3, "bob@contoso"),
            (4, " carol @contoso.com"),
            (5, "dave@@contoso.com"),
            (6, long_name.as_str())
        ]
    );
    let reasons: Vec<&str> = list.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_mentions(reasons[0], &["\"contoso\" has no dot", "such as alice@contoso.com"]);
    assert_mentions(reasons[1], &["contains a space"]);
    assert_mentions(reasons[2], &["2 '@'"]);
    assert_mentions(reasons[3], &["257 characters", "256"]);
    assert_eq!(list.rows, 6);
}

#[test]
fn entries_keep_file_order_and_reading_is_deterministic() {
    let csv = "Email\nzed@contoso.com\nalice@contoso.com\nmike@contoso.com\n";
    let first = users(csv);
    assert_eq!(
        first.entries,
        [
            email("zed@contoso.com"),
            email("alice@contoso.com"),
            email("mike@contoso.com")
        ]
    );
    assert_eq!(first, users(csv));
}

// ---- limits -----------------------------------------------------------------------------------

fn user_rows(n: usize) -> String {
    let mut csv = String::from("Email Address\n");
    for i in 0..n {
        csv.push_str(&format!("user{i}@contoso.com\n"));
    }
    csv
}

#[test]
fn list_of_1000_users_is_accepted() {
    let list = users(&user_rows(MAX_SCOPE_ENTRIES));
    assert_eq!(list.entries.len(), 1_000);
    assert_eq!(list.rows, 1_000);
}

#[test]
fn list_of_1001_users_is_rejected_naming_count_limit_and_groups() {
    let err = users_error(user_rows(MAX_SCOPE_ENTRIES + 1).as_bytes());
    assert_eq!(
        err,
        CsvError::TooManyEntries {
            kind: ListKind::Users,
            count: 1_001,
            limit: 1_000
        }
    );
    assert_mentions(
        &err.to_string(),
        &["1001 distinct users", "limit of 1000", "scope by groups", "groups.csv"],
    );
}

#[test]
fn limit_counts_distinct_entries_not_rows() {
    let mut csv = user_rows(MAX_SCOPE_ENTRIES);
    csv.push_str("USER0@contoso.com\nnot an address\n");
    let list = users(&csv);
    assert_eq!(
        (list.entries.len(), list.duplicates, list.rejected.len()),
        (1_000, 1, 1)
    );
}

#[test]
fn groups_list_over_the_limit_suggests_fewer_larger_groups() {
    let mut csv = String::from("Display Name\n");
    for i in 0..=MAX_SCOPE_ENTRIES {
        csv.push_str(&format!("Team {i}\n"));
    }
    let err = parse_scope_csv(ListKind::Groups, csv.as_bytes()).unwrap_err();
    assert_mentions(
        &err.to_string(),
        &["1001 distinct groups", "limit of 1000", "fewer, larger groups"],
    );
}

#[test]
fn ten_megabyte_file_is_rejected_as_too_large_naming_its_size_before_parsing() {
    // Binary filler: were it parsed, it would be rejected as "not a CSV text file" instead.
    let bytes = vec![0u8; 10 * 1024 * 1024];
    let err = users_error(&bytes);
    assert_eq!(
        err,
        CsvError::TooLarge {
            bytes: 10_485_760,
            limit: MAX_CSV_BYTES
        }
    );
    assert_mentions(
        &err.to_string(),
        &["10.0 MiB", "10485760 bytes", "1048576-byte limit", "scope by groups"],
    );
    assert_eq!(check_size(10_485_760), Err(err));
    assert_eq!(check_size(MAX_CSV_BYTES), Ok(()));
}

// ---- files refused whole ----------------------------------------------------------------------

#[test]
fn empty_file_is_rejected_saying_what_to_put_in_it() {
    for bytes in [&b""[..], b"\xEF\xBB\xBF", b"\r\n\n  \n"] {
        let err = users_error(bytes);
        assert_eq!(err, CsvError::Empty { kind: ListKind::Users }, "{bytes:?}");
        assert_mentions(
            &err.to_string(),
            &["empty", "header row", "Email Address", "one user per line"],
        );
    }
}

#[test]
fn header_only_file_is_rejected_as_having_no_data_rows() {
    for csv in ["Email Address\n", "Email Address", "Email Address,Dept\n\n,\n,Sales\n"] {
        let err = users_error(csv.as_bytes());
        assert!(
            matches!(&err, CsvError::NoValidEntry { rows: 0, rejected, .. } if rejected.is_empty()),
            "{csv:?}: {err:?}"
        );
        assert_mentions(
            &err.to_string(),
            &["no data rows", "add one user per line below the header"],
        );
    }
}

#[test]
fn file_whose_rows_are_all_invalid_is_rejected_quoting_them() {
    let err = users_error(b"Email\nalice\nbob@\n@carol.com\n=1+1\n");
    let CsvError::NoValidEntry { rows, rejected, .. } = &err else {
        panic!("expected NoValidEntry, got {err:?}");
    };
    assert_eq!(*rows, 4);
    assert_eq!(
        rejected_at(rejected),
        [(2, "alice"), (3, "bob@"), (4, "@carol.com"), (5, "=1+1")]
    );
    assert_mentions(
        &err.to_string(),
        &[
            "all 4 data rows were rejected",
            "line 2: \"alice\"",
            "and 1 more",
            "fix these rows",
        ],
    );
}

#[test]
fn binary_file_is_rejected_as_not_a_csv_text_file() {
    let mut xlsx = b"PK\x03\x04\x14\x00\x06\x00".to_vec();
    xlsx.extend_from_slice(&[0x08; 64]);
    let nul_inside = b"Email\nalice@contoso.com\nb\x00b\n".to_vec();
    let control_noise: Vec<u8> = (0..200u8).map(|i| if i % 3 == 0 { 0x01 } else { b'a' }).collect();
    let utf16: Vec<u8> = b"\xFF\xFEE\x00m\x00a\x00i\x00l\x00".to_vec();
    for (bytes, detail) in [
        (xlsx, "Excel workbook (.xlsx)"),
        (nul_inside, "NUL byte at line 3"),
        (control_noise, "are control characters"),
        (utf16, "UTF-16"),
    ] {
        let err = users_error(&bytes);
        assert!(matches!(err, CsvError::NotText { .. }), "{detail}: {err:?}");
        assert_mentions(
            &err.to_string(),
            &["not a CSV text file", detail, "CSV UTF-8 (Comma delimited)"],
        );
    }
}

#[test]
fn latin1_file_is_rejected_naming_the_line_and_how_to_save_as_utf8() {
    // "Renée" saved by Excel as plain CSV (Windows-1252): é is the single byte 0xE9.
    let bytes = b"Email,DisplayName\nalice@contoso.com,Alice\n,Ren\xE9e Dupont\n";
    let err = users_error(bytes);
    assert_eq!(
        err,
        CsvError::NotUtf8 {
            line: 3,
            column: 5,
            byte: 0xE9
        }
    );
    assert_mentions(
        &err.to_string(),
        &["not UTF-8", "0xE9 at line 3, column 5", "CSV UTF-8 (Comma delimited)"],
    );
}

#[test]
fn unterminated_quote_is_rejected_as_malformed_naming_the_line() {
    let err = users_error(b"Email,DisplayName\nalice@contoso.com,Alice\n,\"Bob\nbob@contoso.com,Bob\n");
    assert!(matches!(err, CsvError::Malformed { line: 3, .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &["malformed CSV at line 3", "never closed", "closing quote"],
    );
}

// ---- kinds and constants ----------------------------------------------------------------------

#[test]
fn list_kinds_map_to_scope_kinds() {
    assert_eq!(ListKind::Users.scope_kind(), ScopeKind::Users);
    assert_eq!(ListKind::Groups.scope_kind(), ScopeKind::Groups);
    assert_eq!(ListKind::from_scope_kind(ScopeKind::Groups), Some(ListKind::Groups));
    assert_eq!(ListKind::from_scope_kind(ScopeKind::All), None);
    assert_eq!(ListKind::Users.id_headers(), USER_EMAIL_HEADERS);
    assert_eq!(ListKind::Groups.name_headers(), GROUP_NAME_HEADERS);
}
