defmodule ZarrBridge.Report do
  @moduledoc false
  # Shared by `mix zarr_bridge.doctor` and `mix zarr_bridge.info`: a private
  # sidecar started with the options the application gives its default one,
  # and the text helpers that turn results into aligned lines for people.

  alias ZarrBridge.Sidecar

  @doc """
  The options the application starts its default sidecar with (the
  `:sidecar` config of `:zarr_bridge`), without its registered name.
  """
  @spec sidecar_options() :: keyword
  def sidecar_options do
    :zarr_bridge |> Application.get_env(:sidecar, []) |> Keyword.delete(:name)
  end

  @doc """
  Loads the project's configuration (not starting the application, so no
  default sidecar is started) and starts a private sidecar with the
  application's options. Returns `{pid, hello}` or `{pid, error}`.
  """
  @spec start_sidecar(keyword) :: {pid, {:ok, map} | {:error, ZarrBridge.Error.t()}}
  def start_sidecar(extra \\ []) do
    Mix.Task.run("app.config")
    # The sidecar logs through Logger; its start-up failures are reported by
    # the tasks themselves, once, with the fix.
    {:ok, _} = Application.ensure_all_started(:logger)
    {:ok, pid} = Sidecar.start_link(Keyword.merge(sidecar_options(), extra))
    {pid, Sidecar.info(pid, 60_000)}
  end

  @doc "Stops a sidecar started by `start_sidecar/1`."
  @spec stop_sidecar(pid) :: :ok
  def stop_sidecar(pid) do
    if Process.alive?(pid), do: GenServer.stop(pid, :normal, 10_000)
    :ok
  catch
    :exit, _ -> :ok
  end

  @doc "`rows` (`{label, value}`) as lines, the values aligned after the labels."
  @spec rows([{String.t(), String.t()}], String.t()) :: String.t()
  def rows(rows, indent \\ "  ") do
    width = rows |> Enum.map(fn {label, _} -> String.length(label) end) |> Enum.max(fn -> 0 end)
    pad = String.duplicate(" ", width + 2)

    Enum.map_join(rows, "", fn {label, value} ->
      [first | rest] = String.split(value, "\n")
      head = indent <> String.pad_trailing(label, width + 2) <> first <> "\n"
      head <> Enum.map_join(rest, "", &(indent <> pad <> &1 <> "\n"))
    end)
  end

  @doc "A byte count: `12601 bytes (12.3 KiB)`."
  @spec bytes(non_neg_integer) :: String.t()
  def bytes(n) when n < 1024, do: "#{n} bytes"

  def bytes(n) do
    {value, unit} = scaled(n / 1024, ["KiB", "MiB", "GiB", "TiB", "PiB"])
    "#{n} bytes (#{:erlang.float_to_binary(value, decimals: 1)} #{unit})"
  end

  defp scaled(v, [unit]), do: {v, unit}
  defp scaled(v, [_unit | rest]) when v >= 1024, do: scaled(v / 1024, rest)
  defp scaled(v, [unit | _]), do: {v, unit}

  @doc "A shape or chunk shape as Python writes it: `(200, 100)`, `(5,)`, `()`."
  @spec shape(tuple | list | nil) :: String.t()
  def shape(nil), do: "none"
  def shape(tuple) when is_tuple(tuple), do: shape(Tuple.to_list(tuple))
  def shape([one]), do: "(#{one},)"
  def shape(dims) when is_list(dims), do: "(" <> Enum.join(dims, ", ") <> ")"

  @doc """
  A JSON-like value as Python's `json.dumps(v, sort_keys=True,
  ensure_ascii=False)` writes it; atoms (`:nan`, `:infinity`) as `NaN`,
  `Infinity`, others by name; tuples as lists.
  """
  @spec value(term) :: String.t()
  def value(nil), do: "null"
  def value(true), do: "true"
  def value(false), do: "false"
  def value(:nan), do: "NaN"
  def value(:infinity), do: "Infinity"
  def value(:neg_infinity), do: "-Infinity"
  def value(a) when is_atom(a), do: Atom.to_string(a)
  def value(n) when is_integer(n), do: Integer.to_string(n)
  def value(x) when is_float(x), do: python_float(x)
  def value({:bin, data}), do: value(data)
  def value(s) when is_binary(s), do: if(String.valid?(s), do: quote_text(s), else: inspect(s))
  def value(t) when is_tuple(t), do: value(Tuple.to_list(t))
  def value(list) when is_list(list), do: "[" <> Enum.map_join(list, ", ", &value/1) <> "]"

  def value(%{} = map) do
    body =
      map
      |> Enum.map(fn {k, v} -> {to_string(k), v} end)
      |> Enum.sort()
      |> Enum.map_join(", ", fn {k, v} -> quote_text(k) <> ": " <> value(v) end)

    "{" <> body <> "}"
  end

  # Python's repr of a float: the shortest text that reads back, with ".0"
  # for whole numbers and an exponent from 1e16 on.
  defp python_float(x) do
    text = Float.to_string(x)

    case String.split(text, "e") do
      [mantissa, exp] ->
        exp = String.to_integer(exp)
        sign = if exp < 0, do: "-", else: "+"
        digits = exp |> abs() |> Integer.to_string() |> String.pad_leading(2, "0")
        String.replace_suffix(mantissa, ".0", "") <> "e" <> sign <> digits

      [_] ->
        text
    end
  end

  defp quote_text(s) do
    escaped =
      for <<c::utf8 <- s>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          ?\n -> "\\n"
          ?\t -> "\\t"
          ?\r -> "\\r"
          c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    "\"" <> escaped <> "\""
  end
end
