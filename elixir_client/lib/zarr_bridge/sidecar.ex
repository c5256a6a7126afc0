defmodule ZarrBridge.Sidecar do
  @moduledoc """
  A supervised Python sidecar (`python -m pybridge`) and the process that
  talks to it.

  A `ZarrBridge.Sidecar` is a process (a `:gen_statem`, see
  `ZarrBridge.Sidecar.Connection`) that owns an Erlang Port to one sidecar OS
  process. Requests and replies travel as msgpack frames
  (`protocol/PROTOCOL.md`) on the sidecar's fds 3 and 4; the sidecar's own
  stdout and stderr are inherited from the BEAM, so Python tracebacks show up
  in the console.

  The application starts one sidecar registered as `ZarrBridge.Sidecar`
  (see `ZarrBridge.Application`); start more under your own supervisor:

      children = [
        {ZarrBridge.Sidecar, name: MyApp.Sidecar, workers: 4, allowed_roots: ["/data"]}
      ]

  ## Calls

  `call/4` sends one request and waits for its reply. Many calls may be in
  flight at once, from any number of processes; replies come in completion
  order and are matched by message id, so a slow request never holds up a
  fast one.

  Each caller enforces its own deadline: it monitors the sidecar process
  with an alias and waits on it. When the deadline passes, the caller
  deactivates the alias (so a late reply is dropped by the VM and never
  reaches its mailbox), asks the sidecar to `cancel` the request, and
  returns a `:timeout` error.

  Large payloads travel as streams of frames (PROTOCOL.md section 3). A
  streamed result is joined by the caller, and a result handed over through
  shared memory (`"handoff" => true`) is read and removed by a task under
  the application's `ZarrBridge.HandoffTasks` supervisor; either way it is
  returned as `"data" => {:bin, binary}`, as if the sidecar had sent it
  inline, and this process never waits for a large copy. Uploads are given
  with the `:upload` option of `call/4`; the caller itself writes their
  frames to the Port, or (see "Handoff") writes them into a shared-memory
  file that the sidecar's workers read straight from, so a large upload
  never blocks this process either.

  ## Handoff

  The `handoff:` option means the same in every function that takes it
  (`call/4`, `ZarrBridge.Array`, `ZarrBridge.Codecs`): whether a payload may
  travel through a shared-memory file in `/dev/shm` (same host only)
  instead of the pipe.

    * `:auto` - payloads of at least the sidecar's handoff threshold
      (`handoff_threshold` in `hello`'s limits; `--handoff-threshold`,
      4 MiB by default) take a file; smaller ones the pipe.
    * `true` - uploads take a file whatever their size; results still come
      by file only from the threshold (the sidecar decides).
    * `false` - every byte travels on the pipe; `/dev/shm` is never needed.

  A file is used only while `handoff_usable?/1` holds for the sidecar's
  `hello`; otherwise, and whenever a file cannot be written or made (no
  `/dev/shm`, no space), the payload takes the pipe: handoff changes the
  way, never the data. The limits come from the sidecar's `hello`, kept by
  the process where callers read them without a message: the client has no
  thresholds of its own.

  ## Restarts

  When the sidecar dies, every pending caller gets a `:sidecar_exited`
  error at once, the sidecar's leftover shared-memory files are removed, and
  a new sidecar is started. The first restart is immediate (and so is any
  restart of a sidecar that lived more than 5 s); after that the delay
  starts at 100 ms and doubles up to 10 s. A sidecar that stayed up 30 s
  resets the count. While a restart is pending, calls fail at once with
  `:sidecar_unavailable`; calls made while a sidecar is starting wait for it.
  A sidecar that speaks another major protocol version is not restarted:
  every call then fails with `:protocol_mismatch`.

  The sidecar exits when its input closes, so it goes away with this
  process, and with the BEAM, however they die.

  ## The Python executable

  Found when the sidecar starts (never at compile time), from the first of:
  the `:python` option; the `ZARR_BRIDGE_PYTHON` environment variable; the
  installed environment (a release's bundle in `priv/python_env`, made by
  `ZarrBridge.Release`; else the directory `config :zarr_bridge, python_env:
  DIR` names; else the Mix project's `_build/zarr_bridge_python`; both made
  by `mix zarr_bridge.install`);
  this repository's `.venv` when the library runs from its own checkout.
  With none of them, calls fail with `:sidecar_unavailable` and a message
  that says to run `mix zarr_bridge.install`.

  The sidecar runs as `python -P -m pybridge` in the BEAM's working
  directory (relative store paths are the BEAM's), and `-P` keeps that
  directory off Python's import path.

  A configuration error (no Python environment, a Python that cannot import
  `pybridge`, a worker pool that cannot start) is logged once; the sidecar
  is still retried quietly (backing off up to 10 s), so that it comes up by
  itself once the environment is fixed.
  """

  alias ZarrBridge.Error
  alias ZarrBridge.Options.Schema
  alias ZarrBridge.Sidecar.{Caller, Connection, Handoff, Table}

  @default_call_timeout 30_000

  # Every start option, spelled once: it drives validation, defaults and
  # the docs of start_link/1.
  @start_options [
    name: {:name, nil, "register the process under this name."},
    python: {:path, nil, "the Python executable (see \"The Python executable\")."},
    workers:
      {:pos_integer, nil,
       "the size of the sidecar's worker pool (`--workers`; the sidecar's default " <>
         "is the number of CPUs)."},
    env:
      {:env, [],
       "extra environment variables for the sidecar, as `{name, value}` string pairs; " <>
         "a `nil` value unsets the variable. `PYTHONUNBUFFERED=1` is always set."},
    max_frame_bytes:
      {:pos_integer, nil,
       "the largest request frame this client sends; bigger requests fail with " <>
         "`:frame_too_large` before anything is sent. Defaults to the limit the " <>
         "sidecar reports in `hello`."},
    max_request_bytes:
      {:pos_integer, nil,
       "the most bytes one request may read, write or upload (`--max-request-bytes`; " <>
         "the sidecar's default is 16 GiB). A request over it fails with `:too_large` " <>
         "before any work is done; an upload over it is refused by this client before " <>
         "a byte is sent."},
    max_in_flight:
      {:pos_integer, nil,
       "the requests the sidecar accepts at once (`--max-in-flight`; default 10 000). " <>
         "Beyond it a call fails at once with `:overloaded`."},
    call_timeout: {:timeout, @default_call_timeout, "the default deadline of `call/4`, in ms."},
    allowed_roots:
      {{:list, :dir}, [],
       "directories the sidecar may open stores in (`--allowed-root`, each expanded " <>
         "to an absolute path)."},
    allow_pickle:
      {:boolean, false,
       "let codecs that can run code on decode, such as `pickle`, run (`--allow-pickle`)."},
    args:
      {{:list, :string}, [],
       "extra command-line arguments for `python -m pybridge`, appended last."}
  ]

  @call_options [
    timeout:
      {:timeout, nil,
       "the deadline in milliseconds, or `:infinity` (default: the sidecar's " <>
         "`:call_timeout`). When it passes the request is cancelled and " <>
         "`{:error, %ZarrBridge.Error{code: :timeout}}` is returned."},
    upload:
      {:iodata, nil,
       "bytes to upload after the request (PROTOCOL.md section 3): " <>
         "`\"stream\" => %{\"bytes\" => size}` is added to `params` (or, by " <>
         "handoff, `\"shm\" => %{\"path\" => path, \"bytes\" => size}`), so the " <>
         "method must accept a streamed payload in place of `\"data\"`."},
    data:
      {:iodata, nil,
       "a payload whose way the client picks: inline as `\"data\" => {:bin, data}` " <>
         "when it fits one stream frame (`stream_frame_bytes` in `hello`'s limits) " <>
         "and `:handoff` is not `true`, else as an `:upload`. Not with `:upload`."},
    handoff:
      {{:in, [false, true, :auto]}, false,
       "how the `:upload` (or a large `:data`) travels (see \"Handoff\" in the moduledoc). Only methods " <>
         "that take `\"shm\"` accept a file: `array.write`, `array.append`, " <>
         "`array.write_chunk_raw` and the `codec.*` methods that take an input. " <>
         "Params with `\"handoff\" => true` (a result by handoff) are sent with " <>
         "`\"handoff\" => false` when handoff is not usable with this sidecar."}
  ]

  @call_defaults Schema.defaults(@call_options)

  @typedoc "A sidecar: its pid or its registered name."
  @type server :: GenServer.server()

  @typedoc "A start option (see `start_link/1`)."
  @type option ::
          {:name, GenServer.name()}
          | {:python, Path.t()}
          | {:workers, pos_integer}
          | {:env, [{String.t(), String.t() | nil}]}
          | {:max_frame_bytes, pos_integer}
          | {:max_request_bytes, pos_integer}
          | {:max_in_flight, pos_integer}
          | {:call_timeout, timeout}
          | {:allowed_roots, [Path.t()]}
          | {:allow_pickle, boolean}
          | {:args, [String.t()]}

  @typedoc "A call option (see `call/4`)."
  @type call_option ::
          {:timeout, timeout}
          | {:upload, iodata}
          | {:data, iodata}
          | {:handoff, boolean | :auto}

  ## Public API

  @doc """
  Returns a child spec; the id is the `:name` option when given.
  """
  @spec child_spec([option]) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 5_000
    }
  end

  @doc """
  Starts the process and, from it, the sidecar.

  Returns as soon as the process runs; the sidecar starts in the background
  and calls made meanwhile wait for it. A sidecar that cannot start does not
  make this function fail: calls return `:sidecar_unavailable` errors that
  say why, and the start is retried (see "Restarts" in the moduledoc).

  ## Options

  #{Schema.docs(@start_options)}

  Unknown options raise `ArgumentError`.
  """
  @spec start_link([option]) :: :gen_statem.start_ret()
  def start_link(opts) when is_list(opts) do
    opts |> validate_options!() |> Connection.start_link()
  end

  @doc """
  Sends the request `method` with `params` and waits for its result.

  `params` is a map with string (or atom) keys whose values
  `ZarrBridge.Msgpack` can encode; raw bytes go as `{:bin, iodata}`. The
  result is the sidecar's result map. A result that came as a stream or
  through shared memory carries its bytes as `"data" => {:bin, binary}`.

  ## Options

  #{Schema.docs(@call_options)}

  Unknown options raise `ArgumentError`.

  ## Examples

      iex> ZarrBridge.Sidecar.call(ZarrBridge.Sidecar, "ping", %{})
      {:ok, %{"pong" => true}}
  """
  @spec call(server, String.t(), map, [call_option]) :: {:ok, map} | {:error, Error.t()}
  def call(server, method, params, opts \\ [])
      when is_binary(method) and is_map(params) and is_list(opts) do
    opts = Schema.validate!(opts, @call_options, "ZarrBridge.Sidecar.call/4", @call_defaults)

    case GenServer.whereis(server) do
      pid when is_pid(pid) -> Caller.call(pid, method, params, opts)
      _ -> {:error, Caller.not_running_error(server)}
    end
  end

  @doc """
  Same as `call/4`, but returns the result itself, or raises the
  `ZarrBridge.Error`.
  """
  @spec call!(server, String.t(), map, [call_option]) :: map
  def call!(server, method, params, opts \\ []), do: bang(call(server, method, params, opts))

  @doc """
  The OS pid of the running sidecar: `{:ok, os_pid}`, or a
  `:sidecar_unavailable` error while none runs. Needs no message to the
  process.
  """
  @spec os_pid(server) :: {:ok, pos_integer} | {:error, Error.t()}
  def os_pid(server) do
    with {:ok, pid} <- whereis(server) do
      case Table.os_pid(pid) || ask_os_pid(pid) do
        os_pid when is_integer(os_pid) -> {:ok, os_pid}
        _ -> {:error, not_started_error(server)}
      end
    end
  end

  @doc "Same as `os_pid/1`, but returns the OS pid, or raises the `ZarrBridge.Error`."
  @spec os_pid!(server) :: pos_integer
  def os_pid!(server), do: bang(os_pid(server))

  @doc """
  The result of the sidecar's `hello`: versions, limits, capabilities,
  OS pid and worker count (PROTOCOL.md section 4).

  A ready sidecar answers without a message; one that is starting is waited
  for, up to `timeout`. Errors: `:sidecar_unavailable` (no such process, or
  a restart is pending), `:protocol_mismatch`, `:timeout`.
  """
  @spec info(server, timeout) :: {:ok, map} | {:error, Error.t()}
  def info(server, timeout \\ @default_call_timeout) do
    with {:ok, pid} <- whereis(server) do
      case Table.hello(pid) do
        %{} = hello -> {:ok, hello}
        nil -> wait_info(pid, server, timeout)
      end
    end
  end

  @doc "Same as `info/2`, but returns the `hello` result, or raises the `ZarrBridge.Error`."
  @spec info!(server, timeout) :: map
  def info!(server, timeout \\ @default_call_timeout), do: bang(info(server, timeout))

  # The table has no OS pid between two sidecars, and before the process
  # has run its first start: asked, the process answers after that start.
  defp ask_os_pid(pid) do
    :gen_statem.call(pid, :os_pid, 5_000)
  catch
    :exit, _ -> nil
  end

  defp wait_info(pid, server, timeout) do
    :gen_statem.call(pid, :info, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error,
       %Error{
         code: :timeout,
         message: "the sidecar did not answer hello within #{timeout} ms",
         details: %{timeout: timeout}
       }}

    :exit, _ ->
      {:error, Caller.not_running_error(server)}
  end

  @doc """
  Whether this client can exchange data with the sidecar that answered
  `hello` through shared-memory files (PROTOCOL.md sections 3 and 4): the
  sidecar found `/dev/shm` usable (`"handoff" => %{"usable" => true}`), the
  client sees the same `/dev/shm` (same device, `"dev"`), and both run as
  the same user (`"uid"`; a handoff file is its owner's alone). When it is
  false, `call/4` sends uploads as streams and asks for results by the
  pipe (`"handoff" => false`). A `hello` without `"handoff"` allows it.
  """
  @spec handoff_usable?(map) :: boolean
  @spec handoff_usable?(map) :: boolean
  def handoff_usable?(hello) when is_map(hello), do: Handoff.usable?(hello)

  @doc false
  @spec validate_options!(keyword) :: map
  def validate_options!(opts), do: Schema.validate!(opts, @start_options, "ZarrBridge.Sidecar")

  defp whereis(server) do
    case GenServer.whereis(server) do
      pid when is_pid(pid) -> {:ok, pid}
      _ -> {:error, Caller.not_running_error(server)}
    end
  end

  defp not_started_error(server) do
    %Error{
      code: :sidecar_unavailable,
      message: "no sidecar OS process runs for #{inspect(server)} at the moment",
      details: %{reason: :not_running, retry_in_ms: nil}
    }
  end

  defp bang({:ok, value}), do: value
  defp bang({:error, %Error{} = error}), do: raise(error)
end
