//! The terminal side of `sluice top`: a look every interval, a frame redrawn in place,
//! keys read between looks. A host that cannot be reached is shown on screen and looked
//! for again; the terminal is restored however the loop ends.

use super::draw::{self, Screen};
use super::{Client, FetchError, Snapshot, View};
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// What `sluice top` was asked for.
pub struct Options {
    pub admin: String,
    pub token: Option<String>,
    pub every: Duration,
    /// A CA to trust besides the public ones (`--ca-file`).
    pub ca: Option<reqwest::Certificate>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(
        "sluice top draws on a terminal and standard output is not one; use --once for one plain-text frame"
    )]
    NotATerminal,
    #[error("cannot use the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// A client that gives up on a look before the next one is due.
fn client(options: &Options) -> Client {
    let timeout = options
        .every
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    Client::new(
        &options.admin,
        options.token.clone(),
        timeout,
        options.ca.clone(),
    )
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Two looks an interval apart, printed as one frame `width` columns wide.
pub fn once(options: &Options, width: u16) -> Result<String, TopError> {
    let rt = runtime()?;
    let client = client(options);
    let first = rt.block_on(client.fetch())?;
    std::thread::sleep(options.every);
    let second = rt.block_on(client.fetch())?;
    let view = View::new(Some(&first), &second);
    Ok(draw::to_text(
        &Screen {
            admin: client.admin(),
            every: options.every,
            view: Some(&view),
            error: None,
            failures: 0,
        },
        width,
    ))
}

/// Run until `q`, Esc or Ctrl-C.
pub fn run(options: &Options) -> Result<(), TopError> {
    if !std::io::stdout().is_terminal() {
        return Err(TopError::NotATerminal);
    }
    let rt = runtime()?;
    let client = client(options);
    let result = ratatui::try_init()
        .map_err(TopError::from)
        .and_then(|mut terminal| watch(&mut terminal, &rt, &client, options.every));
    ratatui::restore();
    result
}

/// What the loop keeps between looks.
#[derive(Default)]
struct State {
    last: Option<Snapshot>,
    view: Option<View>,
    error: Option<String>,
    failures: u32,
}

impl State {
    fn look(&mut self, rt: &tokio::runtime::Runtime, client: &Client) {
        match rt.block_on(client.fetch()) {
            Ok(snapshot) => {
                self.view = Some(View::new(self.last.as_ref(), &snapshot));
                self.last = Some(snapshot);
                self.error = None;
                self.failures = 0;
            }
            Err(e) => {
                self.error = Some(e.to_string());
                self.failures += 1;
            }
        }
    }
}

fn watch(
    terminal: &mut DefaultTerminal,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    every: Duration,
) -> Result<(), TopError> {
    let mut state = State::default();
    loop {
        let next = Instant::now() + every;
        state.look(rt, client);
        loop {
            terminal.draw(|frame| {
                let screen = Screen {
                    admin: client.admin(),
                    every,
                    view: state.view.as_ref(),
                    error: state.error.as_deref(),
                    failures: state.failures,
                };
                let area = frame.area();
                draw::draw(&screen, area, frame.buffer_mut());
            })?;
            let wait = next.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            // Any other event (a resize) only redraws.
            if event::poll(wait)? && quits(&event::read()?) {
                return Ok(());
            }
        }
    }
}

/// `q`, Esc, or Ctrl-C (a key, not a signal, in raw mode).
fn quits(event: &Event) -> bool {
    let Event::Key(key) = event else {
        return false;
    };
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}
