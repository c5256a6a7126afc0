# Compiled only when the application has Nx (an optional dependency), as
# stb_image and pgvector do; the type mapping and byte layout live in the
# pure ZarrBridge.Nx.Types, which is always compiled and tested.
if Code.ensure_loaded?(Nx) do
  defmodule ZarrBridge.Nx do
    @moduledoc """
    Nx tensors from and to ZarrBridge arrays (compiled when the application
    has Nx). Types map as in `ZarrBridge.Nx.Types`; other dtypes are refused
    with `:unsupported_dtype`.
    """

    alias ZarrBridge.{Array, NDArray}
    alias ZarrBridge.Nx.Types

    @doc "An `%NDArray{}` as an Nx tensor. `opts` go to `Nx.from_binary/3` (e.g. `backend:`)."
    @spec to_nx(NDArray.t(), keyword) :: {:ok, Nx.Tensor.t()} | {:error, ZarrBridge.Error.t()}
    def to_nx(%NDArray{} = nd, opts \\ []) do
      with {:ok, %{type: type, shape: shape, binary: bin}} <- Types.to_layout(nd) do
        {:ok, bin |> Nx.from_binary(type, opts) |> Nx.reshape(shape)}
      end
    end

    @doc "An Nx tensor as an `%NDArray{}`."
    @spec from_nx(Nx.Tensor.t()) :: {:ok, NDArray.t()} | {:error, ZarrBridge.Error.t()}
    def from_nx(tensor),
      do: Types.from_layout(Nx.type(tensor), Nx.shape(tensor), Nx.to_binary(tensor))

    @doc "Reads an array (or a selection: `Array.read/2`'s options) as a tensor; `backend:` goes to Nx."
    @spec read_tensor(Array.t(), keyword) :: {:ok, Nx.Tensor.t()} | {:error, ZarrBridge.Error.t()}
    def read_tensor(%Array{} = array, opts \\ []) do
      {nx_opts, read_opts} = Keyword.split(opts, [:backend])
      with {:ok, nd} <- Array.read(array, read_opts), do: to_nx(nd, nx_opts)
    end

    @doc "Writes a tensor to an array (`Array.write/3`'s options)."
    @spec write_tensor(Array.t(), Nx.Tensor.t(), keyword) :: :ok | {:error, ZarrBridge.Error.t()}
    def write_tensor(%Array{} = array, tensor, opts \\ []) do
      with {:ok, nd} <- from_nx(tensor),
           {:ok, nd} <- Types.fit(nd, array.metadata.dtype),
           do: Array.write(array, nd, opts)
    end

    @doc "Like `to_nx/2`, but raises."
    def to_nx!(nd, opts \\ []), do: bang(to_nx(nd, opts))
    @doc "Like `from_nx/1`, but raises."
    def from_nx!(tensor), do: bang(from_nx(tensor))
    @doc "Like `read_tensor/2`, but raises."
    def read_tensor!(array, opts \\ []), do: bang(read_tensor(array, opts))
    @doc "Like `write_tensor/3`, but raises."
    def write_tensor!(array, tensor, opts \\ []),
      do: bang(write_tensor(array, tensor, opts))

    defp bang(:ok), do: :ok
    defp bang({:ok, value}), do: value
    defp bang({:error, error}), do: raise(error)
  end
end
