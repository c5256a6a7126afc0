defmodule ZarrBridge.Test.Python do
  @moduledoc false
  # Runs inline Python with the interpreter the sidecar uses (see
  # ZarrBridge.Sidecar.resolve_python/1: $ZARR_BRIDGE_PYTHON, then the
  # repository's .venv/bin/python, then python3), so that tests can use plain
  # zarr-python and numcodecs as the other side.

  @doc "The Python executable."
  @spec python() :: String.t()
  def python do
    case ZarrBridge.Sidecar.resolve_python() do
      {:ok, python} -> python
      {:error, _reason, text} -> raise "no Python for the tests: #{text}"
    end
  end

  @doc """
  Renders a term as a Python literal: maps (string or atom keys), lists,
  tuples, strings, integers, floats, booleans, nil; `:nan`, `:infinity`
  and `:neg_infinity` as `float(...)`; other atoms as strings.
  """
  @spec literal(term) :: String.t()
  def literal(nil), do: "None"
  def literal(true), do: "True"
  def literal(false), do: "False"
  def literal(:nan), do: "float('nan')"
  def literal(:infinity), do: "float('inf')"
  def literal(:neg_infinity), do: "float('-inf')"
  def literal(n) when is_integer(n), do: Integer.to_string(n)
  def literal(x) when is_float(x), do: "float(#{inspect(Float.to_string(x))})"
  def literal(a) when is_atom(a), do: literal(Atom.to_string(a))

  def literal(s) when is_binary(s) do
    # JSON-like escaping is valid Python for every code point via \U.
    body =
      for <<c::utf8 <- s>>, into: "" do
        cond do
          c in [?\\, ?'] -> <<?\\, c>>
          c >= 0x20 and c < 0x7F -> <<c>>
          true -> "\\U" <> String.pad_leading(Integer.to_string(c, 16), 8, "0")
        end
      end

    "'" <> body <> "'"
  end

  def literal(list) when is_list(list), do: "[" <> Enum.map_join(list, ", ", &literal/1) <> "]"

  def literal(tuple) when is_tuple(tuple) do
    case Tuple.to_list(tuple) do
      [one] -> "(" <> literal(one) <> ",)"
      items -> "(" <> Enum.map_join(items, ", ", &literal/1) <> ")"
    end
  end

  def literal(%{} = map) do
    "{" <> Enum.map_join(map, ", ", fn {k, v} -> literal(k) <> ": " <> literal(v) end) <> "}"
  end

  @doc """
  Runs `script` (Python source) with `args` as `sys.argv[1:]` and returns its
  stdout. Raises with the exit status and stderr when the script fails.
  """
  @spec run!(String.t(), [String.t()]) :: String.t()
  def run!(script, args \\ []) do
    stderr = Path.join(System.tmp_dir!(), "zb-python-#{System.unique_integer([:positive])}.err")

    try do
      {out, status} =
        System.cmd(
          "sh",
          ["-c", ~s(exec "$0" "$@" 2>"$ZB_STDERR"), python(), "-c", script | args],
          env: [{"ZB_STDERR", stderr}, {"PYTHONDONTWRITEBYTECODE", "1"}]
        )

      if status != 0 do
        raise """
        inline Python failed with exit status #{status}
        --- script ---
        #{script}
        --- args ---
        #{inspect(args)}
        --- stderr ---
        #{File.read!(stderr)}
        --- stdout ---
        #{out}
        """
      end

      out
    after
      File.rm(stderr)
    end
  end
end
