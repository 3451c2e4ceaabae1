//! `PJRT_Event`: completion of asynchronous work (transfers, executions), awaited by blocking or
//! as a future woken by the plugin's `PJRT_Event_OnReady` callback (no polling).

use std::ffi::c_void;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::api::{args, destroy_on_drop, pjrt_call, Api};
use super::client::ClientHandle;
use super::error::{ErrorCode, PjrtError, Result};
use super::ffi;

/// The completion of one asynchronous operation. Errors it carries name that operation.
pub struct Event {
    // Keeps the client alive while work it started is pending.
    client: Arc<ClientHandle>,
    raw: *mut ffi::PJRT_Event,
    /// The C API call that started the work, for error messages.
    call: &'static str,
}

// SAFETY: a PJRT_Event wraps a thread-safe async value: it may be awaited, queried and destroyed
// from any thread. `Event` has no `&self` methods that call the plugin, so it need not be Sync.
unsafe impl Send for Event {}

impl Event {
    /// Takes ownership of `raw`, an event returned by `call`.
    pub(crate) fn from_raw(
        client: Arc<ClientHandle>,
        raw: *mut ffi::PJRT_Event,
        call: &'static str,
    ) -> Event {
        Event { client, raw, call }
    }

    fn api(&self) -> Api {
        self.client.api()
    }

    /// Blocks the calling thread until the work is done; its error, if it failed.
    pub fn wait(self) -> Result<()> {
        let mut await_args = args!(PJRT_Event_Await_Args { event: self.raw });
        // SAFETY: `self.raw` is a live event owned by `self`. `PJRT_Event_Await` blocks until the
        // event is ready; its returned error is the event's status.
        unsafe { pjrt_call!(self.api(), PJRT_Event_Await, &mut await_args) }
            .map_err(|error| self.attribute(error))
    }

    /// Whether the work is done (without waiting).
    pub fn is_ready(&self) -> Result<bool> {
        let mut ready_args = args!(PJRT_Event_IsReady_Args { event: self.raw });
        // SAFETY: `self.raw` is a live event owned by `self`; the call only reads its state.
        unsafe { pjrt_call!(self.api(), PJRT_Event_IsReady, &mut ready_args) }?;
        Ok(ready_args.is_ready)
    }

    /// Calls `callback` with the work's status once it is done: on the plugin's thread that
    /// finished it, or at once on this thread when it is done already. It tells a caller *when*
    /// work finished (a thread woken to wait for it may be scheduled much later). The callback
    /// runs inside the plugin: keep it short and non-blocking. A panic in it is caught and
    /// logged, since it cannot unwind through the plugin.
    pub fn on_ready<F: FnOnce(Result<()>) + Send + 'static>(self, callback: F) -> Result<()> {
        let state = Box::into_raw(Box::new(Callback { api: self.api(), call: self.call, callback }));
        let mut on_ready_args = args!(PJRT_Event_OnReady_Args {
            event: self.raw,
            callback: Some(call_back::<F>),
            user_arg: state.cast::<c_void>(),
        });
        // SAFETY: `self.raw` is live; `state` is a leaked Box that the plugin hands to
        // `call_back::<F>` exactly once, which takes it back. The registration outlives the
        // event's destruction (see `destroy_on_drop!` below).
        let registered = unsafe { pjrt_call!(self.api(), PJRT_Event_OnReady, &mut on_ready_args) };
        if registered.is_err() {
            // SAFETY: the callback was not registered, so `state` is still ours.
            drop(unsafe { Box::from_raw(state) });
        }
        registered
    }

    /// Names the operation that failed instead of the wait call.
    fn attribute(&self, error: PjrtError) -> PjrtError {
        match error {
            PjrtError::Call { call: "PJRT_Event_Await", code, message } => {
                PjrtError::Call { call: self.call, code, message }
            }
            other => other,
        }
    }

    /// A future that resolves to `value` once the event is ready. `value` is dropped only after
    /// the event is ready, even when the future is dropped earlier: it is how host memory that
    /// the plugin writes into asynchronously is kept alive.
    pub(crate) fn into_future_with<T: Send + 'static>(self, value: T) -> EventFuture<T> {
        let (sender, receiver) = oneshot::channel();
        let state = Box::into_raw(Box::new(OnReady { api: self.api(), call: self.call, sender, value }));
        let mut on_ready_args = args!(PJRT_Event_OnReady_Args {
            event: self.raw,
            callback: Some(on_ready::<T>),
            user_arg: state.cast::<c_void>(),
        });
        // SAFETY: `self.raw` is live; `state` is a leaked Box that the plugin hands to
        // `on_ready::<T>` exactly once, which takes it back.
        match unsafe { pjrt_call!(self.api(), PJRT_Event_OnReady, &mut on_ready_args) } {
            Ok(()) => EventFuture { state: FutureState::Waiting(receiver), _event: Some(self) },
            Err(error) => {
                // The callback was not registered, so `state` is still ours. Wait synchronously
                // so that `value` outlives the work.
                // SAFETY: `state` came from Box::into_raw above and was not handed over.
                let OnReady { value, .. } = *unsafe { Box::from_raw(state) };
                tracing::debug!("PJRT_Event_OnReady failed ({error}); waiting synchronously");
                let result = self.wait().map(|()| value);
                EventFuture { state: FutureState::Ready(Some(result)), _event: None }
            }
        }
    }
}

// A callback registered with OnReady stays registered on the underlying async value when the
// event is destroyed.
destroy_on_drop!(Event, PJRT_Event_Destroy(PJRT_Event_Destroy_Args { event }), api = self.api());

impl IntoFuture for Event {
    type Output = Result<()>;
    type IntoFuture = EventFuture<()>;

    /// Awaits the event without blocking a thread: the plugin's ready callback wakes the task.
    fn into_future(self) -> EventFuture<()> {
        self.into_future_with(())
    }
}

/// What the ready callback needs: it owns `value` until the event is ready.
struct OnReady<T> {
    api: Api,
    call: &'static str,
    sender: oneshot::Sender<(Result<()>, T)>,
    value: T,
}

/// `PJRT_Event_OnReadyCallback`: reports the event's status and hands `value` back.
unsafe extern "C" fn on_ready<T>(error: *mut ffi::PJRT_Error, user_arg: *mut c_void) {
    // SAFETY: `user_arg` is the `OnReady<T>` leaked by `into_future_with`, which the plugin
    // passes to this callback exactly once; ownership of `error` passes to us.
    let state = unsafe { Box::from_raw(user_arg.cast::<OnReady<T>>()) };
    let OnReady { api, call, sender, value } = *state;
    let status = api.check(call, error);
    // A dropped receiver means nobody waits any more: `value` is dropped here, after the work.
    let _ = sender.send((status, value));
}

/// What [`Event::on_ready`] registers.
struct Callback<F> {
    api: Api,
    call: &'static str,
    callback: F,
}

/// `PJRT_Event_OnReadyCallback` of [`Event::on_ready`]: runs the caller's callback.
unsafe extern "C" fn call_back<F: FnOnce(Result<()>)>(error: *mut ffi::PJRT_Error, user_arg: *mut c_void) {
    // SAFETY: `user_arg` is the `Callback<F>` leaked by `on_ready`, which the plugin passes to
    // this function exactly once; ownership of `error` passes to us.
    let state = unsafe { Box::from_raw(user_arg.cast::<Callback<F>>()) };
    let Callback { api, call, callback } = *state;
    let status = api.check(call, error);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(status))).is_err() {
        tracing::error!("a ready callback of {call} panicked");
    }
}

/// The future of an [`Event`] (see [`Event::into_future`]).
pub struct EventFuture<T> {
    state: FutureState<T>,
    // Destroyed only once the future is done or dropped.
    _event: Option<Event>,
}

// `value` is never pinned: it is moved out whole once the event is ready.
impl<T> Unpin for EventFuture<T> {}

enum FutureState<T> {
    Waiting(oneshot::Receiver<(Result<()>, T)>),
    Ready(Option<Result<T>>),
}

impl<T> Future for EventFuture<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<T>> {
        match &mut self.state {
            FutureState::Waiting(receiver) => {
                Pin::new(receiver).poll(context).map(|received| match received {
                    Ok((status, value)) => status.map(|()| value),
                    Err(_) => Err(PjrtError::Call {
                        call: "PJRT_Event_OnReady",
                        code: ErrorCode::Cancelled,
                        message: "the plugin dropped the event's ready callback without calling it".into(),
                    }),
                })
            }
            FutureState::Ready(result) => {
                Poll::Ready(result.take().expect("an EventFuture is not polled after it completed"))
            }
        }
    }
}
