defmodule ZarrBridge.Sidecar.Table do
  @moduledoc false
  # What callers of a sidecar read without a message to its connection
  # process: the default deadline, the OS pid, and, while the sidecar is
  # ready, its hello and the route derived from it (the limits a call needs
  # to pick the way of its payload). One ETS table per connection, written
  # only by it; its id is kept in :persistent_term under the connection's
  # pid, put once at start and erased at stop.

  @typedoc """
  What a caller needs to route a payload, from hello: the sidecar's OS pid,
  whether handoff is usable, the handoff threshold, the per-request limit
  (nil: none) and the largest stream frame.
  """
  @type route :: %{
          os_pid: integer | nil,
          handoff?: boolean,
          handoff_threshold: pos_integer,
          max_request_bytes: pos_integer | nil,
          stream_frame_bytes: pos_integer
        }

  @default_call_timeout 30_000

  @doc "Makes the calling connection's table."
  @spec new(timeout) :: :ets.tid()
  def new(call_timeout) do
    table = :ets.new(__MODULE__, [:set, :protected, read_concurrency: true])
    :ets.insert(table, {:call_timeout, call_timeout})
    :persistent_term.put({__MODULE__, self()}, table)
    table
  end

  @doc "Forgets the calling connection's table (at stop)."
  @spec forget() :: :ok
  def forget do
    :persistent_term.erase({__MODULE__, self()})
    :ok
  end

  @doc "Sets one entry."
  @spec put(:ets.tid(), atom, term) :: :ok
  def put(table, key, value) do
    :ets.insert(table, {key, value})
    :ok
  end

  @doc "The sidecar answered hello."
  @spec ready(:ets.tid(), map, route) :: :ok
  def ready(table, hello, route) do
    :ets.insert(table, [{:hello, hello}, {:route, route}])
    :ok
  end

  @doc "The sidecar went away."
  @spec down(:ets.tid()) :: :ok
  def down(table) do
    :ets.delete(table, :route)
    :ets.delete(table, :hello)
    :ok
  end

  @doc "The route of a ready sidecar, or nil (not ready, or no such process)."
  @spec route(pid) :: route | nil
  def route(pid), do: lookup(pid, :route, nil)

  @doc "The hello of a ready sidecar, or nil."
  @spec hello(pid) :: map | nil
  def hello(pid), do: lookup(pid, :hello, nil)

  @doc "The OS pid of the running sidecar, or nil."
  @spec os_pid(pid) :: integer | nil
  def os_pid(pid), do: lookup(pid, :os_pid, nil)

  @doc "The default deadline of a call."
  @spec call_timeout(pid) :: timeout
  def call_timeout(pid), do: lookup(pid, :call_timeout, @default_call_timeout)

  defp lookup(pid, key, default) do
    case :persistent_term.get({__MODULE__, pid}, nil) do
      nil ->
        default

      table ->
        case :ets.lookup(table, key) do
          [{^key, value}] -> value
          [] -> default
        end
    end
  rescue
    # the table went with its process
    ArgumentError -> default
  end
end
