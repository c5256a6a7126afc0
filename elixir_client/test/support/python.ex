defmodule ZarrBridge.Test.Python do
  @moduledoc false
  # Runs inline Python with the interpreter the sidecar uses (see
  # ZarrBridge.Sidecar.Launcher: $ZARR_BRIDGE_PYTHON, then an installed
  # environment, then the repository's .venv/bin/python), so that tests can use plain
  # zarr-python and numcodecs as the other side.

  @doc "The Python executable."
  @spec python() :: String.t()
  def python do
    case ZarrBridge.Sidecar.Launcher.resolve() do
      {:ok, %{python: python}} -> python
      {:error, error} -> raise "no Python for the tests: #{error.message}"
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

  @doc """
  Python source to put before a test's script: imports, warnings off, and
  helpers shared by the interop tests:

    * `dump(a)` - an array's values as bytes, comparable with `dump/1` on
      the Elixir side: the little-endian C-order bytes for fixed-size
      dtypes, and for variable-length ones each element as a 4-byte
      little-endian length and its bytes (UTF-8 for str);
    * `sha(b)` - the SHA-256 hex digest of bytes;
    * `zdtype(wire)` - the dtype to give zarr-python for a wire dtype
      (`protocol/PROTOCOL.md` §6): a numpy dtype, `str`, or zarr's
      `VariableLengthBytes()`;
    * `open_store(kind, path, mode)` - a zarr-python store: a directory
      path for `"filesystem"`, a `ZipStore` for `"zip"` (close it after
      writing).
  """
  @spec prelude() :: String.t()
  def prelude do
    """
    import sys, os, json, hashlib, warnings
    warnings.filterwarnings('ignore')
    import numpy as np, zarr, numcodecs
    from zarr.storage import ZipStore

    def dump(a):
        a = np.asarray(a)
        if a.dtype.kind in 'OT':
            out = bytearray()
            for x in a.reshape(-1).tolist():
                b = x.encode('utf-8') if isinstance(x, str) else bytes(x)
                out += len(b).to_bytes(4, 'little') + b
            return bytes(out)
        return np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<')).tobytes()

    def sha(b):
        return hashlib.sha256(b).hexdigest()

    def np_dtype(w):
        if isinstance(w, (list, tuple)):
            return np.dtype([(n, np_dtype(t)) for n, t in w])
        if w[0] in 'SU' and w[1:].isdigit():
            return np.dtype(('<' if w[0] == 'U' else '|') + w)
        return np.dtype(w)

    def zdtype(w):
        if w == 'string':
            return str
        if w == 'bytes':
            return zarr.dtype.VariableLengthBytes()
        return np_dtype(w)

    def open_store(kind, path, mode):
        if kind == 'zip':
            return ZipStore(path, mode=mode)
        return path
    """
  end

  @doc """
  The Elixir side of the prelude's `dump(a)`: an NDArray's data as bytes
  (fixed-size data as it is; each variable-length element as a 4-byte
  little-endian length and its bytes).
  """
  @spec dump(ZarrBridge.NDArray.t()) :: binary
  def dump(%ZarrBridge.NDArray{data: data}) when is_binary(data), do: data

  def dump(%ZarrBridge.NDArray{data: values}) when is_list(values),
    do: IO.iodata_to_binary(for v <- values, do: [<<byte_size(v)::32-little>>, v])
end
