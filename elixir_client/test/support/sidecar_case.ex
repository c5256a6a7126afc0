defmodule ZarrBridge.Test.SidecarCase do
  @moduledoc false
  # Helpers for tests that run real sidecars: start a private one with the
  # test methods on, and look at the OS processes it leaves behind.

  use ExUnit.CaseTemplate

  alias ZarrBridge.Sidecar

  using do
    quote do
      import ZarrBridge.Test.SidecarCase
      alias ZarrBridge.{Error, Sidecar}
    end
  end

  @doc """
  Starts a private sidecar under the test supervisor (test methods on, one
  worker unless `opts` say otherwise) and waits until it answered hello.
  """
  def start_sidecar(opts \\ []) do
    env = [{"PYBRIDGE_TEST_METHODS", "1"} | Keyword.get(opts, :env, [])]
    opts = Keyword.merge([workers: 1], Keyword.put(opts, :env, env))

    pid =
      ExUnit.Callbacks.start_supervised!(Supervisor.child_spec({Sidecar, opts}, id: make_ref()))

    {:ok, _hello} = Sidecar.info(pid)
    pid
  end

  @doc "Every descendant of `os_pid` (children, their children, ...), from /proc."
  def descendants(os_pid) do
    children =
      "/proc/[0-9]*/stat"
      |> Path.wildcard()
      |> Enum.flat_map(fn path ->
        case stat(path) do
          {pid, _state, ppid} -> [{ppid, pid}]
          nil -> []
        end
      end)
      |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))

    walk([os_pid], children, [])
  end

  defp walk([], _children, acc), do: acc

  defp walk([pid | rest], children, acc) do
    kids = Map.get(children, pid, [])
    walk(kids ++ rest, children, kids ++ acc)
  end

  @doc "Whether `os_pid` is a live process (a zombie counts as dead)."
  def os_alive?(os_pid) do
    case stat("/proc/#{os_pid}/stat") do
      {_pid, state, _ppid} -> state != "Z"
      nil -> false
    end
  end

  # "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
  defp stat(path) do
    with {:ok, text} <- File.read(path),
         [pid, rest] <- String.split(text, " ", parts: 2),
         [_comm, after_comm] <- :binary.split(rest, ") ", [:global]) |> split_last(),
         [state, ppid | _] <- String.split(after_comm, " ") do
      {String.to_integer(pid), state, String.to_integer(ppid)}
    else
      _ -> nil
    end
  end

  defp split_last([_single]), do: nil
  defp split_last(parts), do: [Enum.join(Enum.drop(parts, -1), ") "), List.last(parts)]

  @doc "Polls `fun` every 20 ms until it returns a truthy value or `timeout` ms pass."
  def eventually(fun, timeout \\ 2_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll(fun, deadline)
  end

  defp poll(fun, deadline) do
    cond do
      value = fun.() -> value
      System.monotonic_time(:millisecond) >= deadline -> false
      true -> Process.sleep(20) && poll(fun, deadline)
    end
  end

  @doc """
  `n` bytes of test data. Up to 1 MiB they are random; beyond, 64 KiB blocks
  of one random pattern, each starting with its own index (so a lost,
  repeated or swapped piece still shows), because `:rand.bytes/1` is slow.
  """
  def random_bytes(n) when n <= 1024 * 1024, do: :rand.bytes(n)

  def random_bytes(n) do
    pattern = :rand.bytes(65_532)
    blocks = for i <- 0..div(n - 1, 65_536), do: [<<i::32>>, pattern]
    blocks |> IO.iodata_to_binary() |> binary_part(0, n)
  end
end
