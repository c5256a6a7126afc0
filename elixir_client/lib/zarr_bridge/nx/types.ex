defmodule ZarrBridge.Nx.Types do
  @moduledoc """
  The pure half of the Nx conversion: which ZarrBridge dtype is which Nx
  type, and the bytes an Nx tensor is built from or gives back.

  This module does not need Nx (it is compiled and tested always);
  `ZarrBridge.Nx` is a few lines over it, compiled only when the
  application has Nx.

  | ZarrBridge dtype | Nx type |
  |---|---|
  | `:int8` `:int16` `:int32` `:int64` | `{:s, 8}` `{:s, 16}` `{:s, 32}` `{:s, 64}` |
  | `:uint8` `:uint16` `:uint32` `:uint64` | `{:u, 8}` `{:u, 16}` `{:u, 32}` `{:u, 64}` |
  | `:float16` `:float32` `:float64` | `{:f, 16}` `{:f, 32}` `{:f, 64}` |
  | `:complex64` `:complex128` | `{:c, 64}` `{:c, 128}` |
  | `:bool` | `{:u, 8}` (0 or 1; an Nx `{:u, 8}` comes back as `:uint8`) |

  Every other dtype (datetimes, strings, fixed bytes and unicode,
  structured) is refused by name with `:unsupported_dtype`, and so are the
  Nx types Zarr has no dtype for (`{:bf, 16}`, the 2- and 4-bit integers,
  8-bit floats).

  The layout: an `%NDArray{}` holds C-order little-endian bytes; an Nx
  binary (`Nx.from_binary/3`, `Nx.to_binary/1`) is C-order in the
  machine's native byte order. So the bytes are passed as they are on a
  little-endian machine and byte-swapped per element (per part for complex
  numbers) on a big-endian one. The shape is the same tuple on both sides
  (`{}` for a scalar).
  """

  alias ZarrBridge.{Dtype, Error, NDArray}

  @type nx_type :: {:s | :u | :f | :c | :bf, pos_integer}

  @to_nx %{
    int8: {:s, 8},
    int16: {:s, 16},
    int32: {:s, 32},
    int64: {:s, 64},
    uint8: {:u, 8},
    uint16: {:u, 16},
    uint32: {:u, 32},
    uint64: {:u, 64},
    float16: {:f, 16},
    float32: {:f, 32},
    float64: {:f, 64},
    complex64: {:c, 64},
    complex128: {:c, 128},
    bool: {:u, 8}
  }

  @from_nx @to_nx |> Map.delete(:bool) |> Map.new(fn {dtype, type} -> {type, dtype} end)

  @doc "The dtypes that have an Nx type."
  @spec dtypes() :: [NDArray.dtype()]
  def dtypes, do: Map.keys(@to_nx)

  @doc "The Nx type of a ZarrBridge dtype."
  @spec nx_type(NDArray.dtype()) :: {:ok, nx_type} | {:error, Error.t()}
  def nx_type(dtype) do
    case Map.fetch(@to_nx, dtype) do
      {:ok, type} ->
        {:ok, type}

      :error ->
        unsupported(
          "dtype #{inspect(dtype)} has no Nx type (Nx holds integers, floats and complex numbers#{hint(dtype)})",
          %{dtype: dtype}
        )
    end
  end

  @doc "The ZarrBridge dtype of an Nx type (`{:u, 8}` is `:uint8`)."
  @spec dtype(term) :: {:ok, NDArray.dtype()} | {:error, Error.t()}
  def dtype(type) do
    case Map.fetch(@from_nx, type) do
      {:ok, dtype} ->
        {:ok, dtype}

      :error ->
        unsupported("Nx type #{inspect(type)} has no Zarr dtype", %{nx_type: type})
    end
  end

  @doc """
  What `Nx.from_binary/3` needs for `nd`: `%{type:, shape:, binary:}`, the
  binary in `endianness` (default: the machine's). A `:bool` array's bytes
  become exactly 0 or 1.
  """
  @spec to_layout(NDArray.t(), :little | :big) ::
          {:ok, %{type: nx_type, shape: tuple, binary: binary}} | {:error, Error.t()}
  def to_layout(%NDArray{data: data, shape: shape, dtype: dtype}, endianness \\ native()) do
    with {:ok, type} <- nx_type(dtype),
         :ok <- check_size(data, shape, dtype) do
      data = if dtype == :bool, do: bools(data), else: data
      {:ok, %{type: type, shape: shape, binary: swap(data, type, :little, endianness)}}
    end
  end

  @doc """
  An `%NDArray{}` from what an Nx tensor gives (`Nx.type/1`, `Nx.shape/1`,
  `Nx.to_binary/1`), the binary in `endianness` (default: the machine's).
  """
  @spec from_layout(term, tuple, binary, :little | :big) ::
          {:ok, NDArray.t()} | {:error, Error.t()}
  def from_layout(type, shape, binary, endianness \\ native()) when is_binary(binary) do
    with {:ok, dtype} <- dtype(type) do
      NDArray.new(swap(binary, type, endianness, :little), shape, dtype)
    end
  end

  @doc """
  Fits a tensor's `%NDArray{}` to the dtype of the array it is written to:
  a `:uint8` array of only 0s and 1s becomes `:bool` for a `:bool` array
  (an Nx "bool" is `{:u, 8}`); other bytes are refused. Anything else is
  returned as it is (`ZarrBridge.Array.write/3` checks the dtype).
  """
  @spec fit(NDArray.t(), NDArray.dtype()) :: {:ok, NDArray.t()} | {:error, Error.t()}
  def fit(%NDArray{dtype: :uint8, data: data} = nd, :bool) do
    case for(<<b <- data>>, b > 1, do: b) do
      [] ->
        {:ok, %NDArray{nd | dtype: :bool}}

      [b | _] ->
        {:error,
         %Error{
           code: :invalid_params,
           message: "a {:u, 8} tensor written to a :bool array must hold only 0 and 1, got #{b}",
           details: %{param: "data", value: b}
         }}
    end
  end

  def fit(%NDArray{} = nd, _dtype), do: {:ok, nd}

  @doc "The machine's byte order, as Nx binaries use it."
  @spec native() :: :little | :big
  def native, do: System.endianness()

  # ------------------------------------------------------------------

  defp check_size(data, shape, dtype) when is_binary(data) do
    expected = NDArray.size(shape) * Dtype.itemsize(dtype)

    if byte_size(data) == expected,
      do: :ok,
      else:
        {:error,
         %Error{
           code: :data_size_mismatch,
           message: "got #{byte_size(data)} bytes, expected #{expected}",
           details: %{expected: expected, got: byte_size(data)}
         }}
  end

  defp bools(data), do: for(<<b <- data>>, into: <<>>, do: <<if(b == 0, do: 0, else: 1)>>)

  defp swap(data, _type, same, same), do: data
  defp swap(data, {_, 8}, _from, _to), do: data
  defp swap(data, {:c, bits}, _from, _to), do: reverse_each(data, div(bits, 16))
  defp swap(data, {_, bits}, _from, _to), do: reverse_each(data, div(bits, 8))

  defp reverse_each(data, size) do
    for <<x::binary-size(size) <- data>>,
      into: <<>>,
      do: x |> :binary.bin_to_list() |> Enum.reverse() |> :binary.list_to_bin()
  end

  defp hint({:datetime64, _}),
    do: "; read datetimes with ZarrBridge.Dates, or view the int64 counts"

  defp hint({:timedelta64, _}), do: "; read timedeltas with ZarrBridge.Dates"
  defp hint(_), do: ""

  defp unsupported(message, details),
    do: {:error, %Error{code: :unsupported_dtype, message: message, details: details}}
end
