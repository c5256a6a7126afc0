defmodule ZarrBridge.Dataset.Variable do
  @moduledoc "One variable of a `ZarrBridge.Dataset` (see there)."
  defstruct [:name, :dims, :shape, :dtype, :data, :values, :array, attrs: %{}, encoding: %{}]

  @type t :: %__MODULE__{
          name: String.t(),
          dims: [String.t()],
          shape: tuple,
          dtype: ZarrBridge.NDArray.dtype(),
          data: ZarrBridge.NDArray.t(),
          values: [term] | nil,
          array: ZarrBridge.Array.t(),
          attrs: map,
          encoding: map
        }
end
