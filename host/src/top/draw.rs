//! One frame of `sluice top`, laid out with ratatui into a buffer: the terminal draws it,
//! `--once` prints it as text.

use super::View;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Padding, Paragraph, Row, Table, Widget, Wrap};
use std::time::Duration;

/// What a frame shows: the last view, and why the last look failed if it did.
pub struct Screen<'a> {
    pub admin: &'a str,
    pub every: Duration,
    pub view: Option<&'a View>,
    /// The last look's error; the view, if any, is then from an earlier look.
    pub error: Option<&'a str>,
    /// Looks that failed in a row.
    pub failures: u32,
}

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

/// Lay the screen out over `area`.
pub fn draw(screen: &Screen, area: Rect, buf: &mut Buffer) {
    let view = screen.view;
    let error_lines = screen.error.map_or(0, |e| wrapped_lines(e, area.width) + 1);
    let stages = view.map_or(0, |v| v.stages.len().max(1) + 2);
    let sinks = view.map_or(0, |v| v.sinks.len().max(1) + 2);
    let fail = view.map_or(0, |v| v.conditions.len().max(1) + 2);
    let [
        title,
        source,
        error_area,
        stage_area,
        sink_area,
        fail_area,
        partition_area,
    ] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(view.is_some())),
        Constraint::Length(error_lines),
        Constraint::Length(stages as u16),
        Constraint::Length(sinks as u16),
        Constraint::Length(fail as u16),
        Constraint::Min(0),
    ])
    .areas(area);
    title_line(screen).render(title, buf);
    if let Some(error) = screen.error {
        let retry = format!(
            "retrying every {:.1} s ({} failed in a row); q quits",
            screen.every.as_secs_f64(),
            screen.failures
        );
        Paragraph::new(vec![
            Line::styled(error.to_owned(), Style::new().fg(Color::Red)),
            Line::raw(retry),
        ])
        .wrap(Wrap { trim: true })
        .render(error_area, buf);
    }
    let Some(view) = view else {
        return;
    };
    source_line(view).render(source, buf);
    stage_table(view).render(stage_area, buf);
    sink_table(view).render(sink_area, buf);
    fail_states(view).render(fail_area, buf);
    partition_table(view).render(partition_area, buf);
}

/// Lines `text` takes wrapped at `width` (an estimate that errs long).
fn wrapped_lines(text: &str, width: u16) -> u16 {
    let width = usize::from(width.max(20));
    let chars = text.chars().count();
    u16::try_from(chars.div_ceil(width) + 1).unwrap_or(u16::MAX)
}

/// Rows `draw` needs to show everything of `screen` without cutting.
pub fn height(screen: &Screen, width: u16) -> u16 {
    let error = screen.error.map_or(0, |e| wrapped_lines(e, width) + 1);
    let view = screen.view.map_or(0, |v| {
        1 + (v.stages.len().max(1) + 2)
            + (v.sinks.len().max(1) + 2)
            + (v.conditions.len().max(1) + 2)
            + (v.partitions.len().max(1) + 2)
    });
    1 + error + u16::try_from(view).unwrap_or(u16::MAX)
}

/// The frame as plain text, `width` columns wide, trailing blanks trimmed.
pub fn to_text(screen: &Screen, width: u16) -> String {
    let area = Rect::new(0, 0, width, height(screen, width));
    let mut buf = Buffer::empty(area);
    draw(screen, area, &mut buf);
    let mut text = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}

fn title_line(screen: &Screen) -> Line<'static> {
    let mut spans = vec![
        Span::styled("sluice top", HEADER),
        Span::raw(format!("  {}", screen.admin)),
    ];
    if let Some(view) = screen.view {
        spans.push(if view.ready {
            Span::styled("  ready", Style::new().fg(Color::Green))
        } else {
            Span::styled(
                "  NOT READY",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        });
        spans.push(Span::raw(format!("  rss {}", bytes(view.resident_bytes))));
    }
    spans.push(Span::raw(format!(
        "  every {:.1} s  q quits",
        screen.every.as_secs_f64()
    )));
    Line::from(spans)
}

fn source_line(view: &View) -> Line<'static> {
    Line::raw(format!(
        "source: consumed {}/s  processed {}/s  routed {}/s  dead letters {} ({}/s)  unrouted {}",
        rate(view.consumed_per_s),
        rate(view.processed_per_s),
        rate(view.routed_per_s),
        view.dead_letters,
        rate(view.dead_letters_per_s),
        view.unrouted,
    ))
}

fn table<'a>(header: &'a [&'a str], rows: Vec<Row<'a>>, widths: &[u16]) -> Table<'a> {
    let widths: Vec<Constraint> = widths.iter().map(|w| Constraint::Length(*w)).collect();
    Table::new(rows, widths)
        .header(Row::new(header.iter().copied()).style(HEADER))
        .column_spacing(2)
        .block(Block::new().padding(Padding::top(1)))
}

fn stage_table(view: &View) -> Table<'_> {
    let mut rows: Vec<Row> = (view.stages.iter())
        .map(|s| {
            Row::new([
                s.name.clone(),
                rate(s.in_per_s),
                rate(s.out_per_s),
                s.failed_calls.to_string(),
                s.foreign_origins.to_string(),
                seconds(s.p99_seconds),
                bytes(s.memory_bytes),
            ])
        })
        .collect();
    if rows.is_empty() {
        rows.push(Row::new(["(no plugins)"]));
    }
    table(
        &[
            "STAGE", "IN/s", "OUT/s", "FAILED", "FOREIGN", "p99", "MEMORY",
        ],
        rows,
        &[24, 10, 10, 8, 8, 10, 10],
    )
}

fn sink_table(view: &View) -> Table<'_> {
    let mut rows: Vec<Row> = (view.sinks.iter())
        .map(|s| {
            Row::new([
                s.name.clone(),
                rate(s.sent_per_s),
                rate(s.acked_per_s),
                s.retried.to_string(),
                s.dead_lettered.to_string(),
                bytes(s.in_flight_bytes),
            ])
        })
        .collect();
    if rows.is_empty() {
        rows.push(Row::new(["(no sinks)"]));
    }
    table(
        &["SINK", "SENT/s", "ACKED/s", "RETRIED", "DEAD", "IN FLIGHT"],
        rows,
        &[24, 10, 10, 8, 8, 10],
    )
}

fn fail_states(view: &View) -> Table<'_> {
    let mut rows: Vec<Row> = (view.conditions.iter())
        .map(|c| {
            Row::new([c.state.clone(), format!("{}: {}", c.subject, c.context)])
                .style(Style::new().fg(Color::Red))
        })
        .collect();
    if rows.is_empty() {
        rows.push(Row::new(["none"]));
    }
    let widths = [Constraint::Length(24), Constraint::Fill(1)];
    Table::new(rows, widths)
        .header(Row::new(["FAIL STATE", "ABOUT"]).style(HEADER))
        .column_spacing(2)
        .block(Block::new().padding(Padding::top(1)))
}

fn partition_table(view: &View) -> Table<'_> {
    let mut rows: Vec<Row> = (view.partitions.iter())
        .map(|p| {
            Row::new([
                format!("{}/{}", p.topic, p.partition),
                p.lag.map_or("-".into(), |l| l.to_string()),
                p.committed.map_or("-".into(), |c| c.to_string()),
            ])
        })
        .collect();
    if rows.is_empty() {
        rows.push(Row::new(["(no partitions assigned)"]));
    }
    let widths = [
        Constraint::Length(40),
        Constraint::Length(12),
        Constraint::Length(14),
    ];
    Table::new(rows, widths)
        .header(Row::new(["PARTITION", "LAG", "COMMITTED"]).style(HEADER))
        .column_spacing(2)
        .block(Block::new().padding(Padding::top(1)))
}

/// A rate: `-` before there are two looks.
pub fn rate(per_s: Option<f64>) -> String {
    match per_s {
        None => "-".into(),
        Some(r) if r >= 100.0 || r == 0.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.1}"),
    }
}

/// A byte count in the largest unit that keeps it at or above 1.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in s, ms or µs; `-` when there were no calls to measure.
pub fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) if s >= 0.001 => format!("{:.1} ms", s * 1e3),
        Some(s) => format!("{:.0} µs", s * 1e6),
    }
}
